#!/usr/bin/env bash
# Run a command confined to a memory cgroup of LIMIT_MB, and say whether the kernel killed it:
# the test of "memory a process cannot give back" (a run's draft pages can be given back; what
# it holds in anonymous memory cannot). Needs root and a cgroup file system (v1 or v2; measured
# here on v1).
#
#   sudo benchmarks/under_memory_limit.sh 1200 python -c "import sys; sys.path.insert(0, \
#       'benchmarks'); import scale_run_memory as m; print(m.measure_stage(300000, 25))"
set -u
if [ $# -lt 2 ]; then
    echo "usage: $0 LIMIT_MB COMMAND [ARG...]" >&2
    exit 2
fi
limit_mb=$1
shift
case $limit_mb in
    ''|*[!0-9]*) echo "$0: LIMIT_MB must be a whole number of megabytes, not '$limit_mb'" >&2
                 exit 2 ;;
esac
bytes=$((limit_mb * 1024 * 1024))
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then  # cgroup v2
    group=/sys/fs/cgroup/xrae-limit-$$
    mkdir "$group" && echo "$bytes" > "$group/memory.max" \
        || { echo "$0: cannot make a memory cgroup (root, and the memory controller?)" >&2
             exit 2; }
    [ -f "$group/memory.swap.max" ] && echo 0 > "$group/memory.swap.max"  # no escape to swap
    peak() { cat "$group/memory.peak" 2>/dev/null || echo "?"; }
    killed() { awk '$1 == "oom_kill" {print $2}' "$group/memory.events"; }
elif [ -d /sys/fs/cgroup/memory ]; then  # cgroup v1
    group=/sys/fs/cgroup/memory/xrae-limit-$$
    mkdir "$group" && echo "$bytes" > "$group/memory.limit_in_bytes" \
        || { echo "$0: cannot make a memory cgroup (root?)" >&2; exit 2; }
    peak() { cat "$group/memory.max_usage_in_bytes"; }
    killed() { awk '$1 == "oom_kill" {print $2}' "$group/memory.oom_control"; }
else
    echo "$0: no cgroup file system at /sys/fs/cgroup" >&2
    exit 2
fi
# The command joins the group before it starts, so all it allocates is charged there.
bash -c 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"' limit "$group" "$@"
status=$?
used=$(peak)
[ "$used" != "?" ] && used="$((used / 1024 / 1024)) MB"
echo "under a ${limit_mb} MB limit: exit status $status, peak charged $used," \
     "killed for memory: $(killed) time(s)"
sleep 0.2
rmdir "$group" 2>/dev/null
exit $status
