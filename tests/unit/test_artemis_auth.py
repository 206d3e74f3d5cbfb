"""The optional Artemis broker's users, roles and security settings (pure, no broker)."""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET

from deploy.local.artemis_auth import (
    cert_users_text,
    password_hash,
    roles_text,
    security_settings_xml,
    users_text,
)

USERS = {"admin": "a", "gateway": "g", "config-publisher": "c", "s1-d01": "p1", "lab-d02": "p2"}
SITES = {"lab-d02": "lab"}


def settings(users: dict[str, str], sites: dict[str, str]) -> dict[str, dict[str, set[str]]]:
    """``{match: {permission: roles}}`` of the rendered XML (which must parse)."""
    root = ET.fromstring(
        f"<security-settings>{security_settings_xml(users, sites)}</security-settings>"
    )
    out: dict[str, dict[str, set[str]]] = {}
    for setting in root:
        perms = {p.get("type", ""): set(p.get("roles", "").split(",")) for p in setting}
        out[setting.get("match", "")] = perms
    return out


def test_password_hash_is_what_artemis_mask_hash_prints() -> None:
    # `artemis mask --hash secret` (2.40.0) printed this salt and hash.
    salt = "A169E3B47B3E48A85E2394E06EF4DA5EB035D4EA55D47EFD83F456F94F2980DE"
    expected = (
        "274E6BE96F29210CC2C0762B435C769BC4A77150C27E02D1A5CE4AC13BAE9F96"
        "8AD7B4C30221044B708B6503DCD79BDE437E0A482C99C13B20F4B2A286B0551C"
    )
    assert password_hash("secret", bytes.fromhex(salt)) == f"ENC(1024:{salt}:{expected})"


def test_users_file_holds_hashes_never_passwords() -> None:
    text = users_text(USERS, SITES)
    lines = dict(line.split(" = ") for line in text.splitlines())
    assert set(lines) == set(USERS)
    for user, value in lines.items():
        rounds, salt, digest = value.removeprefix("ENC(").removesuffix(")").split(":")
        again = hashlib.pbkdf2_hmac("sha1", USERS[user].encode(), bytes.fromhex(salt), 1024, 64)
        assert rounds == "1024" and digest == again.hex().upper()
        assert USERS[user] not in value


def test_roles_and_certificate_subjects() -> None:
    roles = dict(line.split(" = ") for line in roles_text(USERS, SITES).splitlines())
    assert roles["gateway"] == "gateway" and roles["device-s1-d01"] == "s1-d01"
    subjects = dict(line.split(" = ") for line in cert_users_text(USERS, SITES).splitlines())
    assert subjects["lab-d02"] == "CN=lab-d02"


def test_a_device_publishes_only_on_its_own_topics() -> None:
    got = settings(USERS, SITES)
    own = got["thermowatch.*.s1-d01.telemetry"]
    assert own["send"] == {"admin", "device-s1-d01"}
    assert "device-s1-d01" not in own.get("consume", set())
    # A device with a recorded site gets that site only.
    assert "thermowatch.lab.lab-d02.status" in got
    assert not any(m.startswith("thermowatch.*.lab-d02") for m in got)
    # Its receipts: written by the gateway, read by it; config by the publisher.
    receipt = got["thermowatch.*.s1-d01.receipt"]
    assert receipt["send"] == {"admin", "gateway"}
    assert receipt["consume"] == {"admin", "device-s1-d01", "gateway"}
    assert got["thermowatch.*.s1-d01.config"]["send"] == {"admin", "config-publisher"}


def test_the_gateway_reads_everything_and_writes_only_receipts() -> None:
    got = settings(USERS, SITES)
    assert "gateway" in got["thermowatch.#"]["consume"]
    assert "gateway" not in got["thermowatch.#"].get("send", set())
    assert "gateway" in got["thermowatch.*.*.receipt"]["send"]
    assert all("gateway" not in perms.get("send", set()) for m, perms in got.items()
               if not m.endswith(".receipt"))  # fmt: skip


def test_an_id_that_cannot_be_an_address_word_gets_no_rules() -> None:
    users = {**USERS, "dot.ted": "p", "x\ny": "p"}
    got = settings(users, {"odd": "a.b", **SITES} | {"s1-d01": "a.b"})
    assert not any("dot.ted" in m or "x\ny" in m or "s1-d01" in m for m in got)
    assert "dot.ted" not in users_text(users, {})
