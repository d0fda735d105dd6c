#!/bin/sh
# pgha callback: keep a virtual IP address on the primary.
#
# pgha runs it as:  vip.sh [OPTIONS...] <action> <role> <scope>
#   action: on_start | on_stop | on_restart | on_reload | on_role_change
#   role:   primary | replica | standby_leader | demoted
#
# Behaviour (idempotent: adding an address that is there, or removing one that is not, is a
# no-op, so it is safe to run on every callback):
#   role primary and action other than on_stop -> ip addr add VIP dev IFACE, then a gratuitous
#                                                  ARP (iputils arping -U); when arping is not
#                                                  installed a warning says so (stderr);
#   anything else (on_stop, replica, demoted, standby_leader) -> ip addr del VIP dev IFACE.
#
# Settings: environment variables, or --vip=ADDR/PREFIX --iface=DEV --ip-cmd=CMD --arping=CMD
# before the three arguments pgha adds (--arping= with no value: no ARP announcement). Changing an address needs CAP_NET_ADMIN: run pgha with that
# capability (systemd: AmbientCapabilities=CAP_NET_ADMIN) or set PGHA_VIP_IP_CMD="sudo -n ip"
# with a matching sudoers rule for the postgres user.
#
# Wiring it (pgha / Patroni YAML):
#
#   postgresql:
#     callbacks:
#       on_start: /etc/pgha/callbacks/vip.sh --vip=10.0.0.100/24 --iface=eth0
#       on_stop: /etc/pgha/callbacks/vip.sh --vip=10.0.0.100/24 --iface=eth0
#       on_restart: /etc/pgha/callbacks/vip.sh --vip=10.0.0.100/24 --iface=eth0
#       on_role_change: /etc/pgha/callbacks/vip.sh --vip=10.0.0.100/24 --iface=eth0
#
# Use a VIP only where the network lets a host claim an address with gratuitous ARP (one L2
# segment). A primary cut off from pgha's DCS is demoted by pgha, which removes the address,
# but a host that is entirely dead cannot remove it: the new primary's ARP announcement takes
# the address over.

VIP="${PGHA_VIP:-}"                 # address with prefix length, e.g. 10.0.0.100/24
IFACE="${PGHA_VIP_IFACE:-eth0}"     # network device that carries the VIP
IP_CMD="${PGHA_VIP_IP_CMD:-ip}"     # e.g. "sudo -n ip"
ARPING="${PGHA_VIP_ARPING:-arping}" # set to "" to skip the ARP announcement
ARP_COUNT="${PGHA_VIP_ARP_COUNT:-3}"

while [ $# -gt 3 ]; do
    case "$1" in
        --vip=*) VIP="${1#--vip=}" ;;
        --iface=*) IFACE="${1#--iface=}" ;;
        --ip-cmd=*) IP_CMD="${1#--ip-cmd=}" ;;
        --arping=*) ARPING="${1#--arping=}" ;;
        *) echo "vip.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

if [ $# -ne 3 ]; then
    echo "usage: vip.sh [--vip=ADDR/PREFIX] [--iface=DEV] [--ip-cmd=CMD] [--arping=CMD]" \
         "ACTION ROLE SCOPE" >&2
    exit 2
fi
ACTION="$1"
ROLE="$2"
SCOPE="$3"

if [ -z "$VIP" ]; then
    echo "vip.sh: no VIP configured (PGHA_VIP or --vip=ADDR/PREFIX)" >&2
    exit 2
fi
case "$VIP" in
    */*) ;;
    *) VIP="$VIP/32" ;;
esac
ADDR="${VIP%/*}"

has_vip() {
    # word-split IP_CMD on purpose: it may be "sudo -n ip"
    # shellcheck disable=SC2086
    $IP_CMD -o addr show dev "$IFACE" | grep -qF " $ADDR/"
}

add_vip() {
    if has_vip; then
        echo "$ADDR already on $IFACE ($SCOPE)"
        return 0
    fi
    # shellcheck disable=SC2086
    $IP_CMD addr add "$VIP" dev "$IFACE" || return 1
    echo "added $VIP on $IFACE ($SCOPE, $ACTION)"
    if [ -z "$ARPING" ]; then
        return 0
    fi
    if ! command -v "$ARPING" >/dev/null 2>&1; then
        # not silent: without the announcement clients may keep sending to the old owner's
        # MAC address until their ARP cache entry expires
        echo "$ARPING not found: no gratuitous ARP for $ADDR (neighbours learn the new owner when their ARP cache expires; install iputils-arping, or --arping= to turn this off)" >&2
        return 0
    fi
    # unsolicited ARP so switches and neighbours learn the new owner at once
    "$ARPING" -q -U -c "$ARP_COUNT" -I "$IFACE" "$ADDR" >/dev/null 2>&1 \
        || echo "arping failed (the address is up; neighbours learn it when their ARP cache expires)" >&2
    return 0
}

del_vip() {
    if ! has_vip; then
        echo "$ADDR not on $IFACE ($SCOPE)"
        return 0
    fi
    # shellcheck disable=SC2086
    $IP_CMD addr del "$VIP" dev "$IFACE" || return 1
    echo "removed $VIP from $IFACE ($SCOPE, $ACTION $ROLE)"
}

case "$ACTION" in
    on_stop) del_vip ;;
    on_start|on_restart|on_reload|on_role_change)
        if [ "$ROLE" = "primary" ]; then add_vip; else del_vip; fi ;;
    *) echo "vip.sh: unknown action $ACTION" >&2; exit 2 ;;
esac
