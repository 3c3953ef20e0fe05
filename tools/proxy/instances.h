/*
 * csql-proxy: instance arguments (INSTANCE[?query]) with the Auth Proxy's
 * query parameters and conflict rules, and the listener plan of each
 * instance: TCP address and port (engine default ports counted per engine),
 * or Unix socket directory and name. Pure functions, no I/O.
 */
#ifndef CSQL_PROXY_INSTANCES_H
#define CSQL_PROXY_INSTANCES_H

#include <stdbool.h>
#include <stddef.h>

#include "csql/config.h"
#include "opts.h"

/* Longest Unix socket path (sun_path holds 108 bytes with the NUL). */
#define PROXY_UNIX_PATH_MAX 107

typedef enum proxy_db {
    DB_POSTGRES = 0, /* also what an unknown version counts as, like the Auth Proxy */
    DB_MYSQL,
    DB_SQLSERVER,
} proxy_db;

/* The engine of a databaseVersion ("POSTGRES_15", "MYSQL_8_0", "SQLSERVER_2019_STANDARD"). */
proxy_db proxy_db_of(const char *database_version);

/*
 * Parse one instance argument into *out (cleared first). Checks the name's
 * shape, each query key (known, given once, valid value) and the conflicts
 * between keys and with the global options `g`. -1 with a message naming
 * the argument on failure.
 */
int proxy_instance_parse(const char *spec, const proxy_opts *g, proxy_instance *out, char *err,
                         size_t errlen);

/* How the instance is dialled (Auth Proxy order: private IP, PSC, auto IP, public). */
csql_ip_type proxy_instance_ip_type(const proxy_opts *g, const proxy_instance *in);
bool proxy_instance_iam(const proxy_opts *g, const proxy_instance *in);

/* Whether the instance listens on TCP (else a Unix socket). */
bool proxy_instance_is_tcp(const proxy_opts *g, const proxy_instance *in);

/*
 * Whether planning the listener needs the instance's database version: a
 * Unix socket (PostgreSQL naming), or TCP on the engine's default port.
 */
bool proxy_instance_needs_version(const proxy_opts *g, const proxy_instance *in);

/* Next ports: from --port when it is set, else per engine from 5432, 3306, 1433. */
typedef struct proxy_ports {
    int global;
    int postgres;
    int mysql;
    int sqlserver;
} proxy_ports;

void proxy_ports_init(proxy_ports *p, int global_port);

typedef struct proxy_listen_plan {
    bool tcp;
    char address[64];     /* TCP: the IP literal */
    int port;             /* TCP */
    char dir[PROXY_UNIX_PATH_MAX + 1];  /* Unix: directory of the socket */
    char name[PROXY_UNIX_PATH_MAX + 1]; /* Unix: file name of the socket */
    bool make_dir;        /* Unix, PostgreSQL: dir is created (mode 0777) when missing */
    char shown[PROXY_UNIX_PATH_MAX + 72]; /* "127.0.0.1:5432" or the socket path, for logs */
} proxy_listen_plan;

/*
 * The listener of one instance. `database_version` may be NULL when
 * proxy_instance_needs_version() is false. Ports are taken from *ports in
 * instance order, as the Auth Proxy does. -1 with a message on failure (a
 * port above 65535, a socket path too long).
 */
int proxy_instance_plan(const proxy_opts *g, const proxy_instance *in,
                        const char *database_version, proxy_ports *ports,
                        proxy_listen_plan *out, char *err, size_t errlen);

#endif
