# Sourced inside a fresh network namespace (`unshare -n`): loopback up and a veth pair with a
# default route, so that WebRTC finds an interface besides loopback while nothing can leave.
ip link set lo up
ip link add v0 type veth peer name v1
ip addr add 10.99.0.1/24 dev v0
ip link set v0 up
ip link set v1 up
ip route add default dev v0
