#!/usr/bin/env bash
# Static files, sse-mio against nginx, in one run: wrk -t1 -c50 keep-alive
# against sse-mio as one process and nginx 1.22 with one worker (nginx.conf
# beside this script: sendfile, tcp_nopush, open_file_cache), on the same
# copy of www/ plus a 256 KiB file, rounds alternating which goes first;
# prints each round and the medians, and the ratios sse-mio / nginx.
#
#   benches/static/run.sh                     # 3 rounds of 5 s per server and file
#   ROUNDS=5 DURATION=10s benches/static/run.sh
#   SSE_MIO=/path/to/sse-mio benches/static/run.sh   # another build
#
# Needs nginx (Debian: nginx-light) and wrk. Stops both servers it started.
set -euo pipefail

rounds=${ROUNDS:-3}
duration=${DURATION:-5s}
here=$(cd "$(dirname "$0")" && pwd)
project=$(cd "$here/../.." && pwd)
for tool in nginx wrk; do
    command -v "$tool" >/dev/null || { echo "run.sh: needs $tool" >&2; exit 1; }
done
if [[ -z ${SSE_MIO:-} ]]; then
    cargo build --release --quiet --manifest-path "$project/Cargo.toml" --bin sse-mio
    SSE_MIO=$project/target/release/sse-mio
fi

dir=$(mktemp -d)
# nginx's worker runs as an unprivileged user when started as root: it must
# be able to read the copy.
chmod 755 "$dir"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

cp -r "$project/www" "$dir/www"
head -c 262144 /dev/urandom > "$dir/www/256k.bin"

# sse-mio on a port of its own choosing, read from its log.
"$SSE_MIO" --addr 127.0.0.1:0 --www "$dir/www" 2> "$dir/sse-mio.log" &
pids+=($!)
for _ in $(seq 100); do
    grep -q 'http://' "$dir/sse-mio.log" && break
    sleep 0.1
done
sse=$(grep -o 'http://[0-9.:]*' "$dir/sse-mio.log" | head -1)
[[ -n $sse ]] || { cat "$dir/sse-mio.log" >&2; exit 1; }

# nginx on a free port: the kernel picks one, nginx takes it.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
sed -e "s|@ROOT@|$dir/www|" -e "s|@PORT@|$port|" -e "s|@DIR@|$dir|g" "$here/nginx.conf" > "$dir/nginx.conf"
nginx -p "$dir" -c "$dir/nginx.conf" 2> "$dir/nginx.out" &
pids+=($!)
ngx=http://127.0.0.1:$port
for _ in $(seq 100); do
    curl -sf -o /dev/null "$ngx/index.html" && break
    sleep 0.1
done

# Both serve the same bytes.
for path in /index.html /256k.bin; do
    a=$(curl -s "$sse$path" | sha256sum)
    b=$(curl -s "$ngx$path" | sha256sum)
    [[ $a == "$b" ]] || { echo "run.sh: $path differs between the servers" >&2; tail -n 5 "$dir/nginx.out" "$dir/error.log" >&2 2>/dev/null; exit 1; }
done

rate() { # url -> requests per second; any error or non-2xx answer fails the run
    local out
    out=$(wrk -t1 -c50 -d"$duration" "$1")
    if grep -qE 'Non-2xx|Socket errors' <<< "$out"; then
        echo "run.sh: errors against $1:" >&2
        echo "$out" >&2
        exit 1
    fi
    awk '/Requests\/sec/ {print $2}' <<< "$out"
}

declare -A results
for round in $(seq "$rounds"); do
    order=(sse-mio nginx)
    (( round % 2 == 0 )) && order=(nginx sse-mio)
    for server in "${order[@]}"; do
        base=$sse
        [[ $server == nginx ]] && base=$ngx
        for path in /index.html /256k.bin; do
            r=$(rate "$base$path")
            results[$server$path]+="$r "
            printf 'round %d  %-8s %-12s %10s req/s\n' "$round" "$server" "$path" "$r"
        done
    done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
echo
echo "| file | sse-mio (1 process) | nginx (1 worker, open_file_cache) | sse-mio / nginx |"
echo "|---|---:|---:|---:|"
for path in /index.html /256k.bin; do
    a=$(median <<< "${results[sse-mio$path]}")
    b=$(median <<< "${results[nginx$path]}")
    printf '| %s | %.0f | %.0f | %.3f |\n' "$path" "$a" "$b" "$(awk -v a="$a" -v b="$b" 'BEGIN {print a / b}')"
done
echo "(wrk -t1 -c50 -d$duration, keep-alive, medians of $rounds rounds)"
