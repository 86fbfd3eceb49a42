#!/usr/bin/env bash
# Make sure the local services the test suite talks to are up (PostgreSQL, Redis, RabbitMQ),
# starting any that is down with the same command that started it on this machine.
set -u

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

ensure() {  # name port start-command...
    local name=$1 port=$2
    shift 2
    if port_open "$port"; then
        echo "services: $name is up on :$port"
        return 0
    fi
    echo "services: $name is down; starting it"
    "$@" >/dev/null 2>&1 || true
    for _ in $(seq 1 60); do
        if port_open "$port"; then
            echo "services: $name is up on :$port"
            return 0
        fi
        sleep 1
    done
    echo "services: WARNING: $name did not come up on :$port" >&2
    return 1
}

status=0
ensure PostgreSQL 5432 sh -c 'pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start' || status=1
ensure Redis 6379 redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || status=1
ensure RabbitMQ 5672 rabbitmq-server -detached || status=1
exit $status
