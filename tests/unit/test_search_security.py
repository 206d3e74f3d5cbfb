"""The local search server's security files: certificates, users, roles (no server)."""

from __future__ import annotations

import doctest
import importlib
import json
import stat
from pathlib import Path

import bcrypt
import pytest
from cryptography import x509

from deploy.local.search_tls import ensure_ca, ensure_search_pki, issue, subject_dn
from deploy.local.search_users import INDEX_PATTERN, SEARCH_USERS, SearchUsers, security_files
from deploy.local.services.opensearch import _artifact

PASSWORDS = {name: f"pw-{name}" for name in SEARCH_USERS}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_pki_files_are_private_and_made_once(tmp_path: Path) -> None:
    pki = ensure_search_pki(tmp_path / "tls", "127.0.0.1")
    files = sorted(p.name for p in pki.directory.iterdir())
    assert files == [f"{s}{k}.pem" for s in ("admin", "ca", "node") for k in ("-key", "")]
    assert {_mode(p) for p in pki.directory.iterdir()} == {0o600}
    assert _mode(pki.directory) == 0o700
    before = {p.name: p.read_bytes() for p in pki.directory.iterdir()}
    ensure_search_pki(tmp_path / "tls", "127.0.0.1")
    assert {p.name: p.read_bytes() for p in pki.directory.iterdir()} == before


def test_node_certificate_is_signed_by_the_ca_and_names_the_host(tmp_path: Path) -> None:
    pki = ensure_search_pki(tmp_path, "127.0.0.1")
    ca = x509.load_pem_x509_certificate(pki.ca_file.read_bytes())
    node = x509.load_pem_x509_certificate(pki.cert("node").read_bytes())
    node.verify_directly_issued_by(ca)
    san = node.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    admin = x509.load_pem_x509_certificate(pki.cert("admin").read_bytes())
    assert admin.subject.rfc4514_string() == subject_dn("admin") == "CN=thermowatch-admin"
    assert "," not in subject_dn("node")  # one DN on the node's command line, not two


def test_issue_accepts_any_ca(tmp_path: Path) -> None:
    """Another CA (the installation's own) can sign the search certificates."""
    ca_key, ca_cert = ensure_ca(tmp_path, "installation-ca")
    key, cert = issue(ca_key, ca_cert, "node", dns=("search.example",))
    cert.verify_directly_issued_by(ca_cert)
    assert cert.public_key() == key.public_key()


def test_users_get_their_roles_and_bcrypt_hashes() -> None:
    files = security_files(PASSWORDS, rounds=4)
    users = json.loads(files["internal_users.yml"])
    assert set(users) == {"_meta", *SEARCH_USERS}
    for name, password in PASSWORDS.items():
        assert bcrypt.checkpw(password.encode(), users[name]["hash"].encode())
        assert password not in files["internal_users.yml"]
    mapping = json.loads(files["roles_mapping.yml"])
    assert mapping["all_access"] == {"users": ["admin"]}
    assert mapping["thermowatch_writer"] == {"users": ["processor"]}
    assert mapping["thermowatch_reader"] == {"users": ["web", "kibana"]}


def test_only_the_writer_role_may_write_and_only_thermowatch_indices() -> None:
    roles = json.loads(security_files(PASSWORDS, rounds=4)["roles.yml"])
    writes = {"crud", "create_index", "indices:admin/mapping/put"}
    for name in ("thermowatch_writer", "thermowatch_reader"):
        perm = roles[name]["index_permissions"][0]
        assert perm["index_patterns"] == [INDEX_PATTERN, "demo-*"] == ["thermowatch-*", "demo-*"]
        assert (writes <= set(perm["allowed_actions"])) == (name == "thermowatch_writer")


def test_config_allows_only_basic_auth_without_anonymous() -> None:
    config = json.loads(security_files(PASSWORDS, rounds=4)["config.yml"])["config"]["dynamic"]
    assert config["http"]["anonymous_auth_enabled"] is False
    (domain,) = config["authc"].values()
    assert domain["http_authenticator"]["type"] == "basic"
    assert domain["authentication_backend"]["type"] == "intern"


def test_a_missing_password_is_named() -> None:
    with pytest.raises(KeyError, match="kibana"):
        security_files({k: v for k, v in PASSWORDS.items() if k != "kibana"})


def test_passwords_are_made_once_private_and_completed(tmp_path: Path) -> None:
    users = SearchUsers(tmp_path / "search-credentials.json")
    assert users.stored() is None
    first = users.all()
    assert set(first) == set(SEARCH_USERS) and len(set(first.values())) == len(first)
    assert _mode(users.path) == 0o600
    assert users.all() == first == users.stored()
    users.path.write_text(json.dumps({"admin": first["admin"]}))
    completed = users.all()
    assert completed["admin"] == first["admin"] and set(completed) == set(SEARCH_USERS)


@pytest.mark.parametrize(
    ("jar", "artifact"),
    [
        ("netty-codec-http-4.1.118.Final.jar", "netty-codec-http"),
        ("transport-netty4-client-2.19.1.jar", "transport-netty4-client"),
        ("commons-codec-1.17.2.jar", "commons-codec"),
        ("bcprov-jdk18on-1.78.jar", "bcprov-jdk18on"),
        ("asm-9.7.1.jar", "asm"),
    ],
)
def test_plugin_jars_match_classpath_jars_by_artifact(jar: str, artifact: str) -> None:
    assert _artifact(jar) == artifact


@pytest.mark.parametrize("module", ["deploy.local.search_tls", "deploy.local.services.opensearch"])
def test_doctests(module: str) -> None:
    """pytest's testpaths leave deploy/ out (see test_local_stack.py)."""
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
