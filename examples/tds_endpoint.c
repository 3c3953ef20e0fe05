/*
 * tds_endpoint: a local TDS endpoint for a Cloud SQL for SQL Server instance.
 * FreeTDS (and every other SQL Server client) needs a host and port; csql's
 * endpoint listens on loopback and forwards each connection over its own
 * csql TLS dial (docs/drivers/freetds.md).
 *
 *   tds_endpoint INSTANCE [PORT]
 *       listen on 127.0.0.1:PORT (default: any free port), print "127.0.0.1 PORT"
 *       and serve until SIGINT/SIGTERM; then e.g.  tsql -H 127.0.0.1 -p PORT -U sqlserver
 *   tds_endpoint INSTANCE --query USER PASSWORD SQL
 *       open the endpoint, run SQL with FreeTDS db-lib through it, print the rows
 *
 * Credentials: Application Default Credentials, or CSQL_TOKEN. CSQL_API_ENDPOINT
 * overrides the SQL Admin API URL (for csql-emulator).
 */
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sybfront.h>
#include <sybdb.h>

#include <csql/csql.h>
#include <csql/endpoint.h>

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

/* A connection the endpoint accepted could not be dialled: say why (csql's message). */
static void on_dial_error(const csql_error *err, void *userdata)
{
    (void)userdata;
    fprintf(stderr, "dial failed: %s [%s]\n", err->message, csql_strerror(err->code));
}

static int serve(csql_endpoint *ep)
{
    printf("%s %u\n", csql_endpoint_address(ep), csql_endpoint_port(ep));
    fflush(stdout);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    int sig = 0;
    sigwait(&set, &sig);
    return 0;
}

static int msg_handler(DBPROCESS *dbproc, DBINT msgno, int state, int severity, char *text,
                       char *server, char *proc, int line)
{
    (void)dbproc, (void)state, (void)server, (void)proc, (void)line;
    if (severity > 10) {
        fprintf(stderr, "server: Msg %d, severity %d: %s\n", (int)msgno, severity, text);
    }
    return 0;
}

static int err_handler(DBPROCESS *dbproc, int severity, int dberr, int oserr, char *dberrstr,
                       char *oserrstr)
{
    (void)dbproc, (void)severity, (void)oserr, (void)oserrstr;
    fprintf(stderr, "db-lib: %s (%d)\n", dberrstr ? dberrstr : "", dberr);
    return INT_CANCEL;
}

static int query(csql_endpoint *ep, const char *user, const char *password, const char *sql)
{
    char server[64];
    snprintf(server, sizeof(server), "%s:%u", csql_endpoint_address(ep), csql_endpoint_port(ep));
    if (dbinit() == FAIL) {
        return 1;
    }
    dberrhandle(err_handler);
    dbmsghandle(msg_handler);
    LOGINREC *login = dblogin();
    DBSETLUSER(login, user);
    DBSETLPWD(login, password);
    DBSETLAPP(login, "csql-tds-endpoint");
    int status = 1;
    DBPROCESS *db = dbopen(login, server);
    if (db == NULL) {
        goto out;
    }
    if (dbcmd(db, sql) == FAIL || dbsqlexec(db) == FAIL) {
        goto out;
    }
    RETCODE rc;
    while ((rc = dbresults(db)) != NO_MORE_RESULTS && rc != FAIL) {
        int ncols = dbnumcols(db);
        while (dbnextrow(db) != NO_MORE_ROWS) {
            for (int c = 1; c <= ncols; c++) {
                char buf[256];
                DBINT len = dbconvert(db, dbcoltype(db, c), dbdata(db, c), dbdatlen(db, c), SYBCHAR,
                                      (BYTE *)buf, sizeof(buf) - 1);
                buf[len > 0 ? len : 0] = '\0';
                printf("%s%s", c > 1 ? "\t" : "", dbdata(db, c) ? buf : "NULL");
            }
            printf("\n");
        }
    }
    status = rc == FAIL ? 1 : 0;
out:
    if (db != NULL) {
        dbclose(db);
    }
    dbloginfree(login);
    dbexit();
    return status;
}

int main(int argc, char **argv)
{
    if (argc < 2 || (argc > 2 && strcmp(argv[2], "--query") == 0 && argc != 6)) {
        fprintf(stderr, "usage: %s INSTANCE [PORT]\n       %s INSTANCE --query USER PASSWORD SQL\n",
                argv[0], argv[0]);
        return 2;
    }
    int is_query = argc == 6 && strcmp(argv[2], "--query") == 0;
    unsigned long port = (!is_query && argc > 2) ? strtoul(argv[2], NULL, 10) : 0;
    /* Block the stop signals before csql starts threads, so sigwait gets them. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    csql_dialer *d = NULL;
    if (make_dialer(&d) != 0) {
        fprintf(stderr, "dialer: %s\n", csql_error_last()->message);
        return 1;
    }
    csql_endpoint_options eo = CSQL_ENDPOINT_OPTIONS_INIT;
    eo.on_error = on_dial_error;
    csql_endpoint *ep = NULL;
    int status = 1;
    if (csql_endpoint_open_tcp(&ep, d, argv[1], "127.0.0.1", (uint16_t)port, &eo) != 0) {
        fprintf(stderr, "endpoint: %s\n", csql_error_last()->message);
        goto out;
    }
    status = is_query ? query(ep, argv[3], argv[4], argv[5]) : serve(ep);
out:
    csql_endpoint_close(ep);
    csql_dialer_free(d);
    return status;
}
