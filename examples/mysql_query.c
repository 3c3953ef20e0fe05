/*
 * mysql_query: run one SQL statement on a Cloud SQL for MySQL instance
 * through MariaDB Connector/C and csql, and print the rows tab-separated.
 *
 *   mysql_query INSTANCE USER PASSWORD DATABASE [SQL]
 *   mysql_query my-project:us-central1:my-db app secret appdb "select now()"
 *
 * Credentials: Application Default Credentials, or CSQL_TOKEN. CSQL_API_ENDPOINT
 * overrides the SQL Admin API URL (for csql-emulator). CSQL_IAM_AUTHN=1 turns on
 * automatic IAM authentication: USER is the IAM principal, PASSWORD may be "".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <csql/csql.h>
#include <csql/mysql.h>

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
    if (argc < 5) {
        fprintf(stderr, "usage: %s INSTANCE USER PASSWORD DATABASE [SQL]\n", argv[0]);
        return 2;
    }
    const char *sql = argc > 5 ? argv[5] : "select version()";
    csql_dialer *d = NULL;
    if (make_dialer(&d) != 0) {
        fprintf(stderr, "dialer: %s\n", csql_error_last()->message);
        return 1;
    }
    csql_dial_options opts = CSQL_DIAL_OPTIONS_INIT;
    const char *iam = getenv("CSQL_IAM_AUTHN");
    if (iam != NULL && strcmp(iam, "1") == 0) {
        opts.iam_authn = 1;
    }

    int status = 1;
    MYSQL *m = mysql_init(NULL);
    int rc = csql_mysql_connect(d, m, argv[1], argv[2], argv[3][0] ? argv[3] : NULL, argv[4], 0,
                                &opts);
    if (rc < 0) {
        const csql_error *e = csql_error_last(); /* csql could not reach the instance */
        fprintf(stderr, "connect: %s [%s]\n", e->message, csql_strerror(e->code));
        goto out;
    }
    if (rc > 0) {
        fprintf(stderr, "mysql: %s (%d)\n", mysql_error(m), rc); /* the database's own error */
        goto out;
    }
    if (mysql_query(m, sql) != 0) {
        fprintf(stderr, "mysql: %s\n", mysql_error(m));
        goto out;
    }
    MYSQL_RES *res = mysql_store_result(m);
    if (res != NULL) {
        unsigned int nf = mysql_num_fields(res);
        MYSQL_ROW row;
        while ((row = mysql_fetch_row(res)) != NULL) {
            for (unsigned int c = 0; c < nf; c++) {
                printf("%s%s", c ? "\t" : "", row[c] ? row[c] : "NULL");
            }
            printf("\n");
        }
        mysql_free_result(res);
    } else {
        printf("%llu rows affected\n", (unsigned long long)mysql_affected_rows(m));
    }
    status = 0;
out:
    mysql_close(m); /* the forwarded connection ends with it */
    csql_dialer_free(d);
    return status;
}
