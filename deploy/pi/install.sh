#!/bin/sh
# Install the thermowatch edge agent on Raspberry Pi OS (bookworm or later) as a
# systemd service. Idempotent: re-run it to upgrade. Run as root:
#
#   sudo deploy/pi/install.sh [PIP_SPEC]
#
# PIP_SPEC defaults to the source tree this script lives in ("<repo>[edge]");
# pass e.g. "thermowatch[edge]==0.1.0" to install a release instead.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
SPEC=${1:-"$REPO[edge]"}
PREFIX=/opt/thermowatch
CONF_DIR=/etc/thermowatch
UNIT=thermowatch-edge.service

if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: error: run as root (sudo $0)" >&2
    exit 1
fi

echo "==> packages (python venv, lgpio for gpiozero)"
apt-get update -q
apt-get install -y -q python3-venv python3-pip python3-lgpio

echo "==> 1-Wire (DS18B20 on GPIO4)"
if command -v raspi-config >/dev/null 2>&1; then
    raspi-config nonint do_onewire 0   # 0 = enable; takes effect after a reboot
else
    BOOT_CONFIG=/boot/firmware/config.txt
    [ -f "$BOOT_CONFIG" ] || BOOT_CONFIG=/boot/config.txt
    grep -q '^dtoverlay=w1-gpio' "$BOOT_CONFIG" || echo 'dtoverlay=w1-gpio,gpiopin=4' >> "$BOOT_CONFIG"
fi

echo "==> virtualenv in $PREFIX/venv"
# System site packages: lgpio comes from apt (it needs the matching C library).
python3 -m venv --system-site-packages "$PREFIX/venv"
"$PREFIX/venv/bin/pip" install -q --upgrade pip
"$PREFIX/venv/bin/pip" install -q --upgrade "$SPEC"

echo "==> configuration in $CONF_DIR"
install -d -m 0755 "$CONF_DIR"
if [ ! -f "$CONF_DIR/edge.toml" ]; then
    install -m 0644 "$REPO/edge_agent/sample.toml" "$CONF_DIR/edge.toml"
    cat >> "$CONF_DIR/edge.toml" <<'TOML'

# Added by install.sh: set [device] device_id/site and [mqtt] host/username above.
# The MQTT password goes in /etc/thermowatch/edge.password (the unit passes it as a
# systemd credential; do not also set mqtt.password here). Then:
#   sudo systemctl restart thermowatch-edge
TOML
    echo "    wrote $CONF_DIR/edge.toml: edit device_id, site and [mqtt] before starting"
fi
if [ ! -f "$CONF_DIR/edge.password" ]; then
    install -m 0600 /dev/null "$CONF_DIR/edge.password"
    echo "    created empty $CONF_DIR/edge.password (mode 0600): put the MQTT password in it"
fi

echo "==> systemd unit"
install -m 0644 "$REPO/deploy/systemd/$UNIT" "/etc/systemd/system/$UNIT"
systemctl daemon-reload
systemctl enable "$UNIT"
if "$PREFIX/venv/bin/thermowatch" edge check-config --config "$CONF_DIR/edge.toml"; then
    systemctl restart "$UNIT"
    echo "==> started; logs: journalctl -u $UNIT -f"
else
    echo "==> not started: fix $CONF_DIR/edge.toml, then: systemctl restart $UNIT"
fi
if [ ! -d /sys/bus/w1/devices ]; then
    echo "==> reboot to enable 1-Wire: sudo reboot"
fi
