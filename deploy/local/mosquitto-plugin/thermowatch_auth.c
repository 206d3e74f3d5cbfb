/*
 * thermowatch_auth: a Mosquitto 2.0 (v5 plugin API) plugin that binds each
 * MQTT client id to its user and refuses retained publishes.
 *
 * Hand-written because no library offers it: Mosquitto's password_file and
 * acl_file cannot tie a client id to a user nor look at a publish's retain
 * flag, `use_username_as_clientid` would break services that open several
 * connections, and the maintainer's answer for retained-publish control is a
 * plugin (eclipse/mosquitto issue #87). It only ever refuses: everything it
 * allows is deferred (MOSQ_ERR_PLUGIN_DEFER) to the broker's own
 * password_file and acl_file checks, which run after it.
 *
 * Options (mosquitto.conf):
 *   plugin_opt_services  admin,gateway,...  users that may connect with the
 *                        client id "<user>" or "<user>:<suffix>"; every other
 *                        user (a device) only with the client id "<user>".
 *                        ':' never occurs in a device id (telemetry_contract's
 *                        DEVICE_ID_PATTERN) nor in a user name (the password
 *                        file's separator), so no one can produce another's id.
 *   plugin_opt_retain    admin,config-publisher  users that may publish
 *                        retained messages; everyone else is refused.
 *   plugin_opt_kick_file PATH  users (one per line) to disconnect at the next
 *                        reload (SIGHUP): a removed or rotated identity. On a
 *                        reload Mosquitto 2.0 re-reads the password file and
 *                        the ACL, but a client logged in with a certificate
 *                        keeps its connection (the CRL is checked only at the
 *                        handshake), so the stack names it here.
 *
 * With certificate logins (use_identity_as_username) Mosquitto 2.0.11 skips
 * the authentication hook, so a certificate listener also needs
 * use_username_as_clientid (docs/security.md); the ACL hook below still
 * refuses every publish and subscription of a client under another's id.
 *
 * Built by the local stack (deploy/local/services/mosquitto.py) with
 *   gcc -shared -fPIC -O2 -o thermowatch_auth.so thermowatch_auth.c
 * against Debian's mosquitto-dev (the broker's version, 2.0.11).
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#define SEPARATOR ':'

static mosquitto_plugin_id_t *plugin_id = NULL;
static char *services = NULL; /* ",admin,gateway," */
static char *retainers = NULL; /* ",admin,config-publisher," */
static char *kick_file = NULL;

/* ",a,b," from "a,b" (blanks dropped), so a name is found as ",name,". */
static char *name_list(const char *value)
{
	size_t n = strlen(value);
	char *out = malloc(n + 3);
	size_t j = 0;
	if(out == NULL) return NULL;
	out[j++] = ',';
	for(size_t i = 0; i < n; i++){
		if(value[i] != ' ' && value[i] != '\t') out[j++] = value[i];
	}
	out[j++] = ',';
	out[j] = '\0';
	return out;
}

static bool in_list(const char *list, const char *name)
{
	size_t n;
	const char *p;
	if(list == NULL || name == NULL || name[0] == '\0') return false;
	n = strlen(name);
	for(p = strstr(list, name); p != NULL; p = strstr(p + 1, name)){
		if(p > list && p[-1] == ',' && p[n] == ',') return true;
	}
	return false;
}

/* True when `user` may use `client_id`: its own name, or "<service>:<suffix>". */
static bool client_id_allowed(const char *user, const char *client_id)
{
	size_t n;
	if(user == NULL || client_id == NULL) return false;
	if(strcmp(client_id, user) == 0) return true;
	n = strlen(user);
	return in_list(services, user) && strncmp(client_id, user, n) == 0
			&& client_id[n] == SEPARATOR && client_id[n + 1] != '\0';
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *ed = event_data;
	const char *client_id = mosquitto_client_id(ed->client);
	(void)event;
	(void)userdata;
	if(ed->username == NULL) return MOSQ_ERR_PLUGIN_DEFER; /* allow_anonymous decides */
	if(client_id_allowed(ed->username, client_id)) return MOSQ_ERR_PLUGIN_DEFER;
	mosquitto_log_printf(MOSQ_LOG_NOTICE,
			"thermowatch_auth: refused client id '%s' for user '%s'",
			client_id ? client_id : "", ed->username);
	return MOSQ_ERR_AUTH;
}

static int on_acl_check(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_acl_check *ed = event_data;
	const char *user = mosquitto_client_username(ed->client);
	(void)event;
	(void)userdata;
	/* Certificate logins (use_identity_as_username) never reach on_basic_auth in
	 * Mosquitto 2.0: a client under another's id may then connect, but it may
	 * neither publish nor subscribe. */
	if(user != NULL && !client_id_allowed(user, mosquitto_client_id(ed->client))){
		return MOSQ_ERR_ACL_DENIED;
	}
	if(ed->access == MOSQ_ACL_WRITE && ed->retain
			&& !in_list(retainers, mosquitto_client_username(ed->client))){
		mosquitto_log_printf(MOSQ_LOG_NOTICE,
				"thermowatch_auth: refused retained publish on '%s' by user '%s'",
				ed->topic, mosquitto_client_username(ed->client) ?: "");
		return MOSQ_ERR_ACL_DENIED;
	}
	return MOSQ_ERR_PLUGIN_DEFER;
}

/* Disconnect every user named in kick_file (no will: the identity is revoked). */
static int on_reload(int event, void *event_data, void *userdata)
{
	char line[256];
	FILE *f;
	(void)event;
	(void)event_data;
	(void)userdata;
	if(kick_file == NULL) return MOSQ_ERR_PLUGIN_DEFER;
	f = fopen(kick_file, "r");
	if(f == NULL) return MOSQ_ERR_PLUGIN_DEFER; /* nothing to kick */
	while(fgets(line, sizeof(line), f) != NULL){
		line[strcspn(line, "\r\n")] = '\0';
		if(line[0] == '\0') continue;
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "thermowatch_auth: disconnecting revoked user '%s'", line);
		mosquitto_kick_client_by_username(line, false);
	}
	fclose(f);
	/* Anything else would end the broker's reload early (security.c). */
	return MOSQ_ERR_PLUGIN_DEFER;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for(int i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5) return 5;
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **user_data,
		struct mosquitto_opt *opts, int opt_count)
{
	int rc;
	(void)user_data;
	plugin_id = identifier;
	for(int i = 0; i < opt_count; i++){
		if(strcmp(opts[i].key, "services") == 0){
			free(services);
			services = name_list(opts[i].value);
		}else if(strcmp(opts[i].key, "retain") == 0){
			free(retainers);
			retainers = name_list(opts[i].value);
		}else if(strcmp(opts[i].key, "kick_file") == 0){
			free(kick_file);
			kick_file = strdup(opts[i].value);
		}
	}
	rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, NULL);
	if(rc != MOSQ_ERR_SUCCESS) return rc;
	rc = mosquitto_callback_register(plugin_id, MOSQ_EVT_RELOAD, on_reload, NULL, NULL);
	if(rc != MOSQ_ERR_SUCCESS) return rc;
	return mosquitto_callback_register(plugin_id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL, NULL);
}

int mosquitto_plugin_cleanup(void *user_data, struct mosquitto_opt *opts, int opt_count)
{
	(void)user_data;
	(void)opts;
	(void)opt_count;
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL);
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_RELOAD, on_reload, NULL);
	free(services);
	free(retainers);
	free(kick_file);
	services = retainers = kick_file = NULL;
	return MOSQ_ERR_SUCCESS;
}
