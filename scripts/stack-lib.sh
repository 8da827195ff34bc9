# Shell functions of the scripts that run a stack of their own (sourced).
# They use BIN (the socnet binary) and set up_pid.

# start_stack LOG ARGS...: runs `$BIN up ARGS...` in the background with its
# output in LOG and returns once it says "socnet is up" (every service
# answers). An up that exits first, or is not up within 5 minutes, fails.
start_stack() {
	local out=$1
	shift
	"$BIN" up "$@" >"$out" 2>&1 &
	up_pid=$!
	for _ in $(seq 1 1500); do
		grep -q '^socnet is up' "$out" && return 0
		if ! kill -0 "$up_pid" 2>/dev/null; then
			tail -n 20 "$out" >&2
			echo "socnet up $* exited before it was up" >&2
			up_pid=
			return 1
		fi
		sleep 0.2
	done
	echo "socnet up $*: not up within 5 minutes (log: $out)" >&2
	return 1
}

# stop_stack_process: Ctrl-C to the stack started last, and waits for it to
# stop everything it runs.
stop_stack_process() {
	if [ -n "${up_pid:-}" ]; then
		kill -INT "$up_pid" 2>/dev/null || true
		wait "$up_pid" 2>/dev/null || true
		up_pid=
	fi
}
