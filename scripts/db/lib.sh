# Shared helpers for the throwaway database scripts (sourced, not run).

# free_port: print a TCP port on 127.0.0.1 that nothing listens on. Ports come
# from 20000-32767, below the kernel's range for outgoing connections
# (32768-60999 here), so a client socket can't take the port between the pick
# and the server's bind. The start scripts still retry if the bind fails.
free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$(( (RANDOM % 12768) + 20000 ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    echo "db: no free port found" >&2
    return 1
}

# wait_for CMD...: run CMD every 50 ms for up to 30 s until it succeeds.
wait_for() {
    for _ in $(seq 1 600); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    return 1
}
