#!/bin/sh
# Install the thermowatch edge agent on Raspberry Pi OS (bookworm, 64-bit) or
# Debian 12 as a systemd service. Idempotent: re-run it to upgrade. Run as root:
#
#   sudo deploy/pi/install.sh --bundle DIR [PROJECT]
#
# DIR is a provisioning bundle from `thermowatch devices add DEVICE_ID --site SITE
# --out DIR`: edge.toml (the device's config), edge.password (its MQTT password,
# mode 0600), ca.pem (the installation's CA), device.crt and device.key (its client
# certificate and key: the agent's TLS login). Without --bundle an existing
# /etc/thermowatch/edge.toml is kept.
# PROJECT (default: the source tree this script lives in) may be a built wheel.
#
# What it does: the "edge" extra's wheels from requirements-edge.txt (pinned, every
# file checked against its sha256), the project itself with --no-deps, a system
# user "thermowatch" the unit runs as, the config in /etc/thermowatch, the unit
# enabled. Without a running systemd (a chroot, an image build) the unit is enabled
# but not started.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
PREFIX=/opt/thermowatch
CONF_DIR=/etc/thermowatch
STATE_DIR=/var/lib/thermowatch-edge
SERVICE_USER=thermowatch
UNIT=thermowatch-edge.service
DROPIN_DIR=/etc/systemd/system/$UNIT.d

usage() {
    echo "usage: $0 [--bundle DIR] [PROJECT]" >&2
    exit 2
}

BUNDLE=""
PROJECT=$REPO
while [ $# -gt 0 ]; do
    case $1 in
        --bundle) [ $# -ge 2 ] || usage; BUNDLE=$2; shift 2 ;;
        --bundle=*) BUNDLE=${1#--bundle=}; shift ;;
        -h|--help) usage ;;
        -*) echo "install.sh: error: unknown option $1" >&2; usage ;;
        *) PROJECT=$1; shift ;;
    esac
done

if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: error: run as root (sudo $0)" >&2
    exit 1
fi
if [ -n "$BUNDLE" ]; then
    for f in edge.toml edge.password ca.pem device.crt device.key; do
        if [ ! -f "$BUNDLE/$f" ]; then
            echo "install.sh: error: bundle $BUNDLE has no $f (make one with: thermowatch devices add DEVICE_ID --site SITE --out DIR)" >&2
            exit 1
        fi
    done
fi
case $(uname -m) in
    aarch64|x86_64) ;;
    *) echo "install.sh: error: $(uname -m): PyPI has no wheels of numpy, scipy, river or msgspec for it; use 64-bit Raspberry Pi OS (aarch64)" >&2
       exit 1 ;;
esac

echo "==> Debian packages (python3-venv; python3-lgpio where the archive has it)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q python3-venv python3-pip
# python3-lgpio is a Raspberry Pi OS package (Debian 12 main has none): without it
# the agent drives gpiozero's mock pins (a drop-in below says so).
if apt-cache show python3-lgpio >/dev/null 2>&1; then
    apt-get install -y -q python3-lgpio
    rm -f "$DROPIN_DIR/mock-gpio.conf"
else
    echo "    no python3-lgpio in the package archive (not Raspberry Pi OS): GPIO outputs use mock pins"
    install -d -m 0755 "$DROPIN_DIR"
    printf '%s\n' "# Written by install.sh: no python3-lgpio here, so no GPIO pins to drive." \
        "[Service]" "Environment=GPIOZERO_PIN_FACTORY=mock" > "$DROPIN_DIR/mock-gpio.conf"
fi

echo "==> 1-Wire (DS18B20 on GPIO4)"
ONEWIRE=set
if command -v raspi-config >/dev/null 2>&1; then
    raspi-config nonint do_onewire 0   # 0 = enable; takes effect after a reboot
else
    BOOT_CONFIG=/boot/firmware/config.txt
    [ -f "$BOOT_CONFIG" ] || BOOT_CONFIG=/boot/config.txt
    if [ -f "$BOOT_CONFIG" ]; then
        grep -q '^dtoverlay=w1-gpio' "$BOOT_CONFIG" || echo 'dtoverlay=w1-gpio,gpiopin=4' >> "$BOOT_CONFIG"
    else
        ONEWIRE=""
        echo "    no /boot/firmware/config.txt (not a Raspberry Pi): 1-Wire left alone"
    fi
fi

echo "==> service user $SERVICE_USER"
if ! getent passwd "$SERVICE_USER" >/dev/null; then
    useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home \
        --shell /usr/sbin/nologin --comment "thermowatch edge agent" "$SERVICE_USER"
fi
# GPIO character devices (/dev/gpiochip*) belong to group gpio on Raspberry Pi OS.
if getent group gpio >/dev/null; then
    usermod -a -G gpio "$SERVICE_USER"
fi

echo "==> virtualenv in $PREFIX/venv (hashed wheels: $HERE/requirements-edge.txt)"
# System site packages: lgpio comes from apt (it needs the matching C library).
# Debian's own pip and setuptools (python3-venv) are used as they are: an upgrade
# from PyPI would be the one unchecked download. sdnotify has no wheel: it is
# built from its hashed sdist with the venv's setuptools (no build isolation, so
# no unhashed build dependency is fetched).
python3 -m venv --system-site-packages "$PREFIX/venv"
PIP="$PREFIX/venv/bin/pip --disable-pip-version-check"
$PIP install -q --require-hashes --only-binary=:all: --no-binary=sdnotify \
    --no-build-isolation -r "$HERE/requirements-edge.txt"
$PIP install -q --no-deps --no-build-isolation --force-reinstall "$PROJECT"
$PIP check

echo "==> configuration in $CONF_DIR"
install -d -m 0755 "$CONF_DIR"
if [ -n "$BUNDLE" ]; then
    # edge.toml: readable by the service user; edge.password: root only (0600), the
    # unit hands it to the agent as a systemd credential (LoadCredential=).
    install -m 0640 -o root -g "$SERVICE_USER" "$BUNDLE/edge.toml" "$CONF_DIR/edge.toml"
    install -m 0600 -o root -g root "$BUNDLE/edge.password" "$CONF_DIR/edge.password"
    # The TLS login: the CA and certificate are public; the key is readable by the
    # service user's group only (the agent opens it at every connect).
    install -m 0644 -o root -g root "$BUNDLE/ca.pem" "$CONF_DIR/ca.pem"
    install -m 0644 -o root -g root "$BUNDLE/device.crt" "$CONF_DIR/device.crt"
    install -m 0640 -o root -g "$SERVICE_USER" "$BUNDLE/device.key" "$CONF_DIR/device.key"
    # The config publisher's public key (not secret): remote configs must be signed by it.
    if [ -f "$BUNDLE/config-signing.pub" ]; then
        install -m 0644 -o root -g root "$BUNDLE/config-signing.pub" "$CONF_DIR/config-signing.pub"
    fi
    echo "    installed $CONF_DIR/edge.toml, edge.password, ca.pem, device.crt, device.key from $BUNDLE"
elif [ ! -f "$CONF_DIR/edge.toml" ]; then
    echo "install.sh: error: no $CONF_DIR/edge.toml: pass --bundle DIR (thermowatch devices add DEVICE_ID --site SITE --out DIR)" >&2
    exit 1
fi

echo "==> systemd unit"
install -m 0644 "$REPO/deploy/systemd/$UNIT" "/etc/systemd/system/$UNIT"
"$PREFIX/venv/bin/thermowatch" edge check-config --config "$CONF_DIR/edge.toml"
systemctl enable "$UNIT"
if [ -d /run/systemd/system ] && ! systemd-detect-virt --chroot >/dev/null 2>&1; then
    systemctl daemon-reload
    systemctl restart "$UNIT"
    echo "==> started; logs: journalctl -u $UNIT -f"
else
    echo "==> systemd is not running here (not PID 1, e.g. a chroot): $UNIT enabled, starts at the next boot"
fi
if [ -n "$ONEWIRE" ] && [ ! -d /sys/bus/w1/devices ]; then
    echo "==> reboot to enable 1-Wire: sudo reboot"
fi
