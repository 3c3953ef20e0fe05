/*
 * libcsql-mysql: csql_dial, a one-shot csql_endpoint serving that connection
 * on a private Unix socket, then mysql_real_connect to it. See
 * include/csql/mysql.h and docs/drivers/mysql.md.
 */
#include "csql/mysql.h"

#include <stdbool.h>
#include <string.h>

#include "csql/conn.h"
#include "csql/endpoint.h"
#include "csql/errors.h"
#include "csql/helper.h"
#include "mysql_internal.h"

#define MY_USER_MAX 256

/*
 * The instance must be MySQL; an IAM principal becomes its database user.
 * Reads the instance's version from the (now warm) cache.
 */
static int check_instance_and_user(csql_dialer *d, const char *instance,
                                   const csql_dial_options *opts, const char *user, char *dbuser,
                                   size_t len)
{
    csql_instance_info *info = NULL;
    int rc = csql_dialer_instance_info(d, instance, opts, &info);
    if (rc != CSQL_OK) {
        return rc;
    }
    const char *version = csql_instance_info_database_version(info);
    bool iam = opts != NULL && opts->iam_authn == 1;
    if (version == NULL || strncmp(version, "MYSQL_", 6) != 0) {
        bool sqlserver = version != NULL && strncmp(version, "SQLSERVER_", 10) == 0;
        if (sqlserver && iam) {
            rc = csql_error_set(CSQL_ERR_IAM_UNSUPPORTED,
                                "csql_mysql_connect: automatic IAM authentication is not "
                                "supported on SQL Server (instance %s)",
                                instance);
        } else {
            rc = csql_error_set(CSQL_ERR_UNSUPPORTED_INSTANCE,
                                "csql_mysql_connect: instance %s runs %s, not MySQL", instance,
                                version ? version : "an unknown engine");
        }
        goto out;
    }
    if (iam && (user == NULL || user[0] == '\0')) {
        rc = csql_error_set(CSQL_ERR_INVALID_ARGUMENT,
                            "csql_mysql_connect: automatic IAM authentication needs the IAM "
                            "principal as user (e.g. sa@project.iam.gserviceaccount.com)");
        goto out;
    }
    dbuser[0] = '\0';
    if (user != NULL && strchr(user, '@') != NULL) {
        rc = csql_iam_db_user(version, user, dbuser, len);
    }
out:
    csql_instance_info_free(info);
    return rc;
}

int csql_mysql_connect(csql_dialer *d, MYSQL *m, const char *instance, const char *user,
                       const char *password, const char *db, unsigned long client_flags,
                       const csql_dial_options *opts)
{
    if (d == NULL || m == NULL || instance == NULL) {
        return csql_error_set(CSQL_ERR_INVALID_ARGUMENT,
                              "csql_mysql_connect: dialer, MYSQL handle and instance are required");
    }
    csql_conn *conn = NULL;
    int rc = csql_dial(d, instance, opts, &conn);
    if (rc != CSQL_OK) {
        return rc;
    }
    char dbuser[MY_USER_MAX];
    rc = check_instance_and_user(d, instance, opts, user, dbuser, sizeof(dbuser));
    if (rc != CSQL_OK) {
        csql_conn_close(conn);
        return rc;
    }
    csql_endpoint *ep = NULL;
    csql_endpoint_options eo = CSQL_ENDPOINT_OPTIONS_INIT;
    eo.dial = opts;
    /* The dialer keys the event loop; the endpoint is closed right after the handshake. */
    rc = csql_endpoint_open_conn(&ep, conn, d, &eo);
    if (rc != CSQL_OK) {
        return rc;
    }
    unsigned int proto = MYSQL_PROTOCOL_SOCKET;
    mysql_options(m, MYSQL_OPT_PROTOCOL, &proto);
    MYSQL *ok = mysql_real_connect(m, "localhost", dbuser[0] ? dbuser : user, password, db, 0,
                                   csql_endpoint_path(ep), client_flags);
    /* Stop listening: the connection made carries on, forwarded by the loop. */
    csql_endpoint_close(ep);
    if (ok == NULL) {
        unsigned int e = mysql_errno(m);
        return e != 0 ? (int)e : 2000; /* CR_UNKNOWN_ERROR */
    }
    return CSQL_OK;
}

/* ---- for csql_mysql_async.c ---- */

int csql_mysql__check(csql_dialer *d, const char *instance, const csql_dial_options *opts,
                      const char *user, char *dbuser, size_t len)
{
    return check_instance_and_user(d, instance, opts, user, dbuser, len);
}
