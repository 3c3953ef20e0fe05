/*
 * pq_query: run one SQL statement on a Cloud SQL for PostgreSQL instance
 * through libpq and csql, and print the rows tab-separated.
 *
 *   pq_query INSTANCE CONNINFO [SQL]
 *   pq_query my-project:us-central1:my-db "user=postgres password=secret dbname=appdb" "select now()"
 *
 * Credentials: Application Default Credentials, or CSQL_TOKEN (a fixed
 * access token). CSQL_API_ENDPOINT overrides the SQL Admin API URL (for
 * csql-emulator), CSQL_IAM_AUTHN=1 turns on automatic IAM authentication
 * (then user= is the IAM principal and no password is needed).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <csql/csql.h>
#include <csql/pq.h>

static int fail_csql(const char *what)
{
    const csql_error *e = csql_error_last();
    fprintf(stderr, "%s: %s [%s]\n", what, e->message, csql_strerror(e->code));
    return 1;
}

static int make_dialer(csql_dialer **d)
{
    csql_config *cfg = NULL;
    int rc = csql_config_new(&cfg);
    const char *api = getenv("CSQL_API_ENDPOINT");
    const char *token = getenv("CSQL_TOKEN");
    if (rc == 0 && api != NULL) {
        rc = csql_config_set_admin_api_endpoint(cfg, api);
    }
    if (rc == 0 && token != NULL) {
        rc = csql_config_set_token(cfg, token);
    }
    if (rc == 0) {
        rc = csql_dialer_new(d, cfg);
    }
    csql_config_free(cfg);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s INSTANCE CONNINFO [SQL]\n", argv[0]);
        return 2;
    }
    const char *sql = argc > 3 ? argv[3] : "select version()";
    csql_dialer *d = NULL;
    if (make_dialer(&d) != 0) {
        return fail_csql("dialer");
    }
    csql_dial_options opts = CSQL_DIAL_OPTIONS_INIT;
    const char *iam = getenv("CSQL_IAM_AUTHN");
    if (iam != NULL && strcmp(iam, "1") == 0) {
        opts.iam_authn = 1;
    }

    int status = 1;
    PGconn *pg = csql_pq_connect(d, argv[1], argv[2], &opts);
    if (pg == NULL) {
        status = fail_csql("connect"); /* csql could not reach the instance */
        goto out;
    }
    if (PQstatus(pg) != CONNECTION_OK) {
        fprintf(stderr, "postgres: %s", PQerrorMessage(pg)); /* the database's own error */
        goto out;
    }
    PGresult *res = PQexec(pg, sql);
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_TUPLES_OK) {
        for (int r = 0; r < PQntuples(res); r++) {
            for (int c = 0; c < PQnfields(res); c++) {
                printf("%s%s", c ? "\t" : "", PQgetisnull(res, r, c) ? "NULL" : PQgetvalue(res, r, c));
            }
            printf("\n");
        }
        status = 0;
    } else if (st == PGRES_COMMAND_OK) {
        printf("%s\n", PQcmdStatus(res));
        status = 0;
    } else {
        fprintf(stderr, "postgres: %s", PQresultErrorMessage(res));
    }
    PQclear(res);
out:
    PQfinish(pg); /* also releases csql's local endpoint for this connection */
    csql_dialer_free(d);
    return status;
}
