/*
 * libcsql-pq: csql_dial, then a csql_endpoint serving that connection on a
 * private Unix socket, then libpq pointed at it. See include/csql/pq.h and
 * docs/drivers/libpq.md.
 */
#include "csql/pq.h"

#include <libpq-events.h>

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "csql/conn.h"
#include "csql/endpoint.h"
#include "csql/errors.h"
#include "csql/helper.h"
#include "pq_internal.h"

/* libpq looks for "<host>/.s.PGSQL.<port>"; the directory is private, so the port can be fixed. */
#define PQ_PORT "5432"
#define PQ_SOCKET_NAME ".s.PGSQL." PQ_PORT
#define PQ_MAX_OPTIONS 128
#define PQ_USER_MAX 256

/* Keys csql decides; a conninfo that sets one is refused. */
static const char *const FORCED_KEYS[] = {"host", "hostaddr", "port", "sslmode", "requiressl"};

typedef struct pq_params {
    const char *keys[PQ_MAX_OPTIONS + 8];
    const char *vals[PQ_MAX_OPTIONS + 8];
    int n;
    PQconninfoOption *parsed; /* owns the strings of the user's options */
    char user[PQ_USER_MAX];
} pq_params;

static bool is_forced(const char *key)
{
    for (size_t i = 0; i < sizeof(FORCED_KEYS) / sizeof(FORCED_KEYS[0]); i++) {
        if (strcmp(key, FORCED_KEYS[i]) == 0) {
            return true;
        }
    }
    return false;
}

/* Parse the user's conninfo; refuse the keys csql sets. */
static int parse_conninfo(const char *conninfo, pq_params *p)
{
    char *err = NULL;
    p->parsed = PQconninfoParse(conninfo ? conninfo : "", &err);
    if (p->parsed == NULL) {
        int rc = csql_error_set(CSQL_ERR_INVALID_ARGUMENT, "csql_pq_connect: conninfo: %s",
                                err ? err : "out of memory");
        PQfreemem(err);
        return rc;
    }
    for (PQconninfoOption *o = p->parsed; o->keyword != NULL; o++) {
        if (o->val == NULL) {
            continue;
        }
        if (is_forced(o->keyword)) {
            return csql_error_set(CSQL_ERR_INVALID_ARGUMENT,
                                  "csql_pq_connect: conninfo sets \"%s\"; remove it: csql "
                                  "connects libpq to the instance itself (host, hostaddr, port "
                                  "and sslmode are its own)",
                                  o->keyword);
        }
        if (p->n >= PQ_MAX_OPTIONS) {
            return csql_error_set(CSQL_ERR_INVALID_ARGUMENT,
                                  "csql_pq_connect: conninfo has more than %d options",
                                  PQ_MAX_OPTIONS);
        }
        p->keys[p->n] = o->keyword;
        p->vals[p->n] = o->val;
        p->n++;
    }
    return CSQL_OK;
}

static const char *param_get(const pq_params *p, const char *key)
{
    for (int i = 0; i < p->n; i++) {
        if (strcmp(p->keys[i], key) == 0) {
            return p->vals[i];
        }
    }
    return NULL;
}

static void param_set(pq_params *p, const char *key, const char *val)
{
    for (int i = 0; i < p->n; i++) {
        if (strcmp(p->keys[i], key) == 0) {
            p->vals[i] = val;
            return;
        }
    }
    p->keys[p->n] = key;
    p->vals[p->n] = val;
    p->n++;
}

/*
 * The instance must be PostgreSQL; an IAM principal in user= becomes its
 * database user name. Reads the instance's version from the (now warm) cache.
 */
static int check_instance_and_user(csql_dialer *d, const char *instance,
                                   const csql_dial_options *opts, pq_params *p)
{
    csql_instance_info *info = NULL;
    int rc = csql_dialer_instance_info(d, instance, opts, &info);
    if (rc != CSQL_OK) {
        return rc;
    }
    const char *version = csql_instance_info_database_version(info);
    if (version == NULL || strncmp(version, "POSTGRES_", 9) != 0) {
        rc = csql_error_set(CSQL_ERR_UNSUPPORTED_INSTANCE,
                            "csql_pq_connect: instance %s runs %s, not PostgreSQL", instance,
                            version ? version : "an unknown engine");
        goto out;
    }
    const char *user = param_get(p, "user");
    bool iam = opts != NULL && opts->iam_authn == 1;
    if (iam && (user == NULL || user[0] == '\0')) {
        rc = csql_error_set(CSQL_ERR_INVALID_ARGUMENT,
                            "csql_pq_connect: automatic IAM authentication needs the IAM "
                            "principal as user= in conninfo (e.g. "
                            "sa@project.iam.gserviceaccount.com)");
        goto out;
    }
    if (user != NULL && strchr(user, '@') != NULL) {
        rc = csql_iam_db_user(version, user, p->user, sizeof(p->user));
        if (rc != CSQL_OK) {
            goto out;
        }
        param_set(p, "user", p->user);
    }
out:
    csql_instance_info_free(info);
    return rc;
}

/* PQfinish runs this after closing libpq's socket: the endpoint goes with the PGconn. */
static int on_pq_event(PGEventId id, void *event_info, void *pass_through)
{
    (void)event_info;
    if (id == PGEVT_CONNDESTROY) {
        csql_endpoint_close(pass_through);
    }
    return 1;
}

/* `given`: a connection already dialled (csql_pq_async.c), owned from here; NULL: dial now. */
static PGconn *connect_common(csql_dialer *d, const char *instance, const char *conninfo,
                              const csql_dial_options *opts, bool start, csql_conn *given)
{
    PGconn *pg = NULL;
    csql_conn *conn = given;
    csql_endpoint *ep = NULL;
    pq_params *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        csql_conn_close(given);
        csql_error_set(CSQL_ERR_NOMEM, "csql_pq_connect: out of memory");
        return NULL;
    }
    if (d == NULL || instance == NULL) {
        csql_conn_close(given);
        csql_error_set(CSQL_ERR_INVALID_ARGUMENT, "csql_pq_connect: dialer and instance are required");
        goto out;
    }
    /* Check what we can before going to the network. */
    if (parse_conninfo(conninfo, p) != CSQL_OK) {
        csql_conn_close(given);
        goto out;
    }
    if (given == NULL && csql_dial(d, instance, opts, &conn) != CSQL_OK) {
        goto out;
    }
    if (check_instance_and_user(d, instance, opts, p) != CSQL_OK) {
        csql_conn_close(conn);
        goto out;
    }
    csql_endpoint_options eo = CSQL_ENDPOINT_OPTIONS_INIT;
    eo.dial = opts;
    eo.unix_socket_name = PQ_SOCKET_NAME;
    /* With the dialer: PQcancel and PQreset connect again and get fresh dials. */
    if (csql_endpoint_open_conn(&ep, conn, d, &eo) != CSQL_OK) {
        goto out;
    }
    param_set(p, "host", csql_endpoint_dir(ep));
    param_set(p, "hostaddr", ""); /* set, so $PGHOSTADDR cannot point libpq elsewhere */
    param_set(p, "port", PQ_PORT);
    param_set(p, "sslmode", "disable");
    p->keys[p->n] = NULL;
    p->vals[p->n] = NULL;

    pg = start ? PQconnectStartParams(p->keys, p->vals, 0) : PQconnectdbParams(p->keys, p->vals, 0);
    if (pg == NULL) {
        csql_error_set(CSQL_ERR_NOMEM, "csql_pq_connect: libpq could not allocate a connection");
        csql_endpoint_close(ep);
        goto out;
    }
    if (!PQregisterEventProc(pg, on_pq_event, "csql", ep)) {
        /* The connection works without it; only cancel/reset lose their fresh dials. */
        csql_endpoint_close(ep);
    }
out:
    if (p->parsed != NULL) {
        PQconninfoFree(p->parsed);
    }
    free(p);
    return pg;
}

PGconn *csql_pq_connect(csql_dialer *d, const char *instance, const char *conninfo,
                        const csql_dial_options *opts)
{
    return connect_common(d, instance, conninfo, opts, false, NULL);
}

PGconn *csql_pq_connect_start(csql_dialer *d, const char *instance, const char *conninfo,
                              const csql_dial_options *opts)
{
    return connect_common(d, instance, conninfo, opts, true, NULL);
}

/* ---- for csql_pq_async.c ---- */

PGconn *csql_pq__start_over_conn(csql_dialer *d, const char *instance, const char *conninfo,
                                 const csql_dial_options *opts, csql_conn *conn)
{
    return connect_common(d, instance, conninfo, opts, true, conn);
}

int csql_pq__check_conninfo(const char *conninfo)
{
    pq_params *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        return csql_error_set(CSQL_ERR_NOMEM, "csql_pq_connect: out of memory");
    }
    int rc = parse_conninfo(conninfo, p);
    if (p->parsed != NULL) {
        PQconninfoFree(p->parsed);
    }
    free(p);
    return rc;
}
