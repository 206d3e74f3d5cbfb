// Administration of the local stack's Kafka through its Admin API, as the stack's
// admin user: set one user's SCRAM-SHA-512 password, or add ACLs.
//
// Run by deploy/local/services/kafka.py as a single-file source program with the
// Kafka jars on the class path:
//     java -cp '<cache>/kafka-libs/*' KafkaAdmin.java <bootstrap> <ca.pem> <admin> scram <user>
//     java -cp '<cache>/kafka-libs/*' KafkaAdmin.java <bootstrap> <ca.pem> <admin> acls
// Standard input: the admin's password on the first line; then, for scram, the
// user's new password; for acls, one ACL a line:
//     <principal> <TOPIC|GROUP|CLUSTER|TRANSACTIONAL_ID> <LITERAL|PREFIXED> <name> <OPERATION>
// Passwords never come as arguments: a command line is readable by every local user.

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ScramCredentialInfo;
import org.apache.kafka.clients.admin.ScramMechanism;
import org.apache.kafka.clients.admin.UserScramCredentialUpsertion;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

public class KafkaAdmin {
    public static void main(String[] args) throws Exception {
        if (args.length < 4) {
            System.err.println("usage: KafkaAdmin <bootstrap> <ca.pem> <admin user> scram <user> | acls");
            System.exit(2);
        }
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String adminPassword = in.readLine();
        if (adminPassword == null) {
            System.err.println("KafkaAdmin: expected the admin password on stdin");
            System.exit(2);
        }
        Properties props = new Properties();
        props.put("bootstrap.servers", args[0]);
        props.put("security.protocol", "SASL_SSL");
        props.put("sasl.mechanism", "SCRAM-SHA-512");
        props.put("ssl.truststore.type", "PEM");
        props.put("ssl.truststore.location", args[1]);
        props.put("sasl.jaas.config",
            "org.apache.kafka.common.security.scram.ScramLoginModule required username=\""
                + args[2] + "\" password=\"" + adminPassword + "\";");
        try (Admin admin = Admin.create(props)) {
            if (args[3].equals("scram") && args.length == 5) {
                String newPassword = in.readLine();
                if (newPassword == null || newPassword.isEmpty()) {
                    System.err.println("KafkaAdmin: expected the new password on stdin");
                    System.exit(2);
                }
                admin.alterUserScramCredentials(List.of(new UserScramCredentialUpsertion(
                        args[4], new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), newPassword)))
                    .all().get();
                System.out.println("scram credential set user=" + args[4]);
            } else if (args[3].equals("acls")) {
                List<AclBinding> acls = new ArrayList<>();
                for (String line = in.readLine(); line != null; line = in.readLine()) {
                    String[] f = line.trim().split(" ");
                    if (f.length != 5) continue;
                    acls.add(new AclBinding(
                        new ResourcePattern(ResourceType.valueOf(f[1]), f[3], PatternType.valueOf(f[2])),
                        new AccessControlEntry(f[0], "*", AclOperation.valueOf(f[4]), AclPermissionType.ALLOW)));
                }
                admin.createAcls(acls).all().get();
                System.out.println("acls created count=" + acls.size());
            } else {
                System.err.println("KafkaAdmin: unknown action " + args[3]);
                System.exit(2);
            }
        }
    }
}
