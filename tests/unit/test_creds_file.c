/*
 * Credentials files: service_account and authorized_user parsing, every
 * missing field named, unknown types, bad JSON never quoted, bounded reads,
 * and the ADC chain's choice of file (no network: descriptions only).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "config_internal.h"
#include "credentials/creds_internal.h"
#include "error.h"
#include "support.h"

static char *g_rsa_pem; /* PKCS#8 PEM of a key made for this test run */
static char *g_ec_pem;

static char *key_pem(EVP_PKEY *k)
{
    BIO *b = BIO_new(BIO_s_mem());
    assert_non_null(b);
    assert_int_equal(PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL), 1);
    char *p = NULL;
    long n = BIO_get_mem_data(b, &p);
    char *out = strndup(p, (size_t)n);
    BIO_free(b);
    return out;
}

static int setup_keys(void **state)
{
    (void)state;
    EVP_PKEY *rsa = EVP_RSA_gen(2048);
    EVP_PKEY *ec = EVP_EC_gen("P-256");
    if (rsa == NULL || ec == NULL) {
        return -1;
    }
    g_rsa_pem = key_pem(rsa);
    g_ec_pem = key_pem(ec);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ec);
    return 0;
}

static int teardown_keys(void **state)
{
    (void)state;
    free(g_rsa_pem);
    free(g_ec_pem);
    return 0;
}

static json_t *sa_json(void)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "type", "service_account", "project_id",
                     "proj", "private_key_id", "kid123", "private_key", g_rsa_pem, "client_email",
                     "sa@proj.iam.gserviceaccount.com", "client_id", "1234");
}

static json_t *user_json(void)
{
    return json_pack("{s:s, s:s, s:s, s:s}", "type", "authorized_user", "client_id",
                     "cid.apps.googleusercontent.com", "client_secret", "SECRET-client",
                     "refresh_token", "SECRET-refresh");
}

static int parse_obj(json_t *o, csql__creds_file *f)
{
    char *text = json_dumps(o, 0);
    assert_non_null(text);
    csql_error_clear();
    int rc = csql__creds_file_parse(text, strlen(text), "credentials file /x/key.json", f);
    free(text);
    return rc;
}

static void assert_msg_has(const char *needle)
{
    const char *m = csql_error_last()->message;
    if (strstr(m, needle) == NULL) {
        fail_msg("message \"%s\" lacks \"%s\"", m, needle);
    }
}

static void assert_msg_lacks(const char *needle)
{
    const char *m = csql_error_last()->message;
    if (strstr(m, needle) != NULL) {
        fail_msg("message \"%s\" contains \"%s\"", m, needle);
    }
}

static void test_service_account(void **state)
{
    (void)state;
    json_t *o = sa_json();
    csql__creds_file f;
    assert_int_equal(parse_obj(o, &f), CSQL_OK);
    assert_int_equal(f.type, CSQL__FILE_SERVICE_ACCOUNT);
    assert_string_equal(f.client_email, "sa@proj.iam.gserviceaccount.com");
    assert_string_equal(f.private_key, g_rsa_pem);
    assert_string_equal(f.private_key_id, "kid123");
    assert_string_equal(f.token_uri, "https://oauth2.googleapis.com/token");
    assert_null(f.client_secret);
    csql__creds_file_dispose(&f);
    assert_null(f.client_email);

    /* The file's token_uri is honoured; private_key_id is optional. */
    json_object_set_new(o, "token_uri", json_string("http://127.0.0.1:9/token"));
    json_object_del(o, "private_key_id");
    assert_int_equal(parse_obj(o, &f), CSQL_OK);
    assert_string_equal(f.token_uri, "http://127.0.0.1:9/token");
    assert_null(f.private_key_id);
    csql__creds_file_dispose(&f);
    json_decref(o);
}

static void test_authorized_user(void **state)
{
    (void)state;
    json_t *o = user_json();
    csql__creds_file f;
    assert_int_equal(parse_obj(o, &f), CSQL_OK);
    assert_int_equal(f.type, CSQL__FILE_AUTHORIZED_USER);
    assert_string_equal(f.client_id, "cid.apps.googleusercontent.com");
    assert_string_equal(f.client_secret, "SECRET-client");
    assert_string_equal(f.refresh_token, "SECRET-refresh");
    assert_string_equal(f.token_uri, "https://oauth2.googleapis.com/token");
    csql__creds_file_dispose(&f);
    json_decref(o);
}

static void check_missing(json_t *(*make)(void), const char *field)
{
    csql__creds_file f;
    json_t *o = make();
    json_object_del(o, field);
    assert_int_equal(parse_obj(o, &f), CSQL_ERR_CREDENTIALS);
    char quoted[64];
    snprintf(quoted, sizeof(quoted), "missing field \"%s\"", field);
    assert_msg_has(quoted);
    assert_msg_has("/x/key.json");
    assert_null(f.client_email);
    assert_null(f.client_id);

    /* Present but empty, or not a string: named too. */
    json_object_set_new(o, field, json_string(""));
    assert_int_equal(parse_obj(o, &f), CSQL_ERR_CREDENTIALS);
    assert_msg_has(field);
    json_object_set_new(o, field, json_integer(7));
    assert_int_equal(parse_obj(o, &f), CSQL_ERR_CREDENTIALS);
    snprintf(quoted, sizeof(quoted), "field \"%s\" is not a string", field);
    assert_msg_has(quoted);
    json_decref(o);
}

static void test_every_missing_field_named(void **state)
{
    (void)state;
    check_missing(sa_json, "client_email");
    check_missing(sa_json, "private_key");
    check_missing(user_json, "client_id");
    check_missing(user_json, "client_secret");
    check_missing(user_json, "refresh_token");
    check_missing(sa_json, "type");
}

static void test_unknown_type(void **state)
{
    (void)state;
    csql__creds_file f;
    json_t *o = sa_json();
    json_object_set_new(o, "type", json_string("external_account"));
    assert_int_equal(parse_obj(o, &f), CSQL_ERR_CREDENTIALS);
    assert_msg_has("unsupported credentials type \"external_account\"");
    assert_msg_has("service_account or authorized_user");
    json_object_set_new(o, "type", json_string("a\nb"));
    assert_int_equal(parse_obj(o, &f), CSQL_ERR_CREDENTIALS);
    assert_msg_has("\"a?b\"");
    json_decref(o);
}

static void test_bad_json_not_quoted(void **state)
{
    (void)state;
    csql__creds_file f;
    const char *broken = "{\"type\":\"service_account\",\n\"private_key\": SECRETKEYMATERIAL}";
    csql_error_clear();
    assert_int_equal(csql__creds_file_parse(broken, strlen(broken), "credentials JSON", &f),
                     CSQL_ERR_CREDENTIALS);
    assert_msg_has("credentials JSON: not valid JSON (line 2");
    assert_msg_lacks("SECRET");

    const char *arr = "[1,2]";
    assert_int_equal(csql__creds_file_parse(arr, strlen(arr), "credentials JSON", &f),
                     CSQL_ERR_CREDENTIALS);
    assert_msg_has("not a JSON object");

    const char *dup = "{\"type\":\"authorized_user\",\"type\":\"service_account\"}";
    assert_int_equal(csql__creds_file_parse(dup, strlen(dup), "credentials JSON", &f),
                     CSQL_ERR_CREDENTIALS);

    /* Length-bounded: bytes past len are not read. */
    const char *good = "{\"type\":\"x\"}GARBAGE";
    assert_int_equal(csql__creds_file_parse(good, 12, "credentials JSON", &f),
                     CSQL_ERR_CREDENTIALS);
    assert_msg_has("unsupported credentials type \"x\"");
}

static void test_bad_token_uri(void **state)
{
    (void)state;
    csql__creds_file f;
    json_t *o = user_json();
    json_object_set_new(o, "token_uri", json_string("file:///etc/passwd"));
    assert_int_equal(parse_obj(o, &f), CSQL_ERR_CREDENTIALS);
    assert_msg_has("token_uri");
    json_decref(o);
}

static void write_file(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
}

static void write_json(const char *path, json_t *o)
{
    assert_int_equal(json_dump_file(o, path, 0), 0);
}

static void test_load_file(void **state)
{
    (void)state;
    char dir[256], path[512];
    assert_int_equal(csqlt_tempdir(dir, sizeof(dir), "csql-credfile"), 0);
    csql__creds_file f;

    snprintf(path, sizeof(path), "%s/missing.json", dir);
    assert_int_equal(csql__creds_file_load(path, "credentials file", &f), CSQL_ERR_CREDENTIALS);
    assert_msg_has(path);
    assert_msg_has("cannot open");

    assert_int_equal(csql__creds_file_load(dir, "credentials file", &f), CSQL_ERR_CREDENTIALS);
    assert_msg_has("not a regular file");

    snprintf(path, sizeof(path), "%s/big.json", dir);
    char *big = malloc(CSQL__CREDS_FILE_MAX + 2);
    assert_non_null(big);
    memset(big, ' ', CSQL__CREDS_FILE_MAX + 1);
    big[CSQL__CREDS_FILE_MAX + 1] = '\0';
    write_file(path, big);
    free(big);
    assert_int_equal(csql__creds_file_load(path, "credentials file", &f), CSQL_ERR_CREDENTIALS);
    assert_msg_has("larger than");

    snprintf(path, sizeof(path), "%s/sa.json", dir);
    json_t *o = sa_json();
    write_json(path, o);
    json_decref(o);
    assert_int_equal(csql__creds_file_load(path, "credentials file", &f), CSQL_OK);
    assert_string_equal(f.client_email, "sa@proj.iam.gserviceaccount.com");
    csql__creds_file_dispose(&f);

    /* Missing field in a file: the message names the file and the field. */
    o = user_json();
    json_object_del(o, "refresh_token");
    snprintf(path, sizeof(path), "%s/user.json", dir);
    write_json(path, o);
    json_decref(o);
    assert_int_equal(csql__creds_file_load(path, "credentials file", &f), CSQL_ERR_CREDENTIALS);
    assert_msg_has(path);
    assert_msg_has("\"refresh_token\"");
    assert_msg_lacks("SECRET");
    csqlt_rmdir(dir);
}

static void test_private_key_must_be_rsa_pem(void **state)
{
    (void)state;
    csql__creds_file f;
    csql__token_source src;
    const char *bad[] = {"not a key", NULL};
    bad[1] = g_ec_pem;
    for (size_t i = 0; i < 2; i++) {
        json_t *o = sa_json();
        json_object_set_new(o, "private_key", json_string(bad[i]));
        assert_int_equal(parse_obj(o, &f), CSQL_OK);
        json_decref(o);
        assert_int_equal(csql__source_from_file(&f, "credentials file /x/key.json", &src),
                         CSQL_ERR_CREDENTIALS);
        assert_msg_has("private_key is not a PEM RSA private key");
        assert_msg_has("/x/key.json");
        csql__creds_file_dispose(&f);
    }
    json_t *o = sa_json();
    assert_int_equal(parse_obj(o, &f), CSQL_OK);
    json_decref(o);
    assert_int_equal(csql__source_from_file(&f, "credentials file /x/key.json", &src), CSQL_OK);
    assert_null(f.private_key); /* moved into the source */
    assert_string_equal(src.description, "service account sa@proj.iam.gserviceaccount.com");
    csql__token_source_dispose(&src);
}

/* ---------------- csql__creds_new over files and the ADC chain ---------------- */

static void unset_adc_env(void)
{
    unsetenv("GOOGLE_APPLICATION_CREDENTIALS");
    unsetenv("CLOUDSDK_CONFIG");
    unsetenv("GCE_METADATA_HOST");
}

static const char *describe_new(const csql_config *cfg, int *rc, csql__creds **c)
{
    csql_error_clear();
    *rc = csql__creds_new(cfg, NULL, c);
    return *rc == CSQL_OK ? csql__creds_describe(*c) : NULL;
}

static void test_creds_new_file_and_json(void **state)
{
    (void)state;
    char dir[256], path[512];
    assert_int_equal(csqlt_tempdir(dir, sizeof(dir), "csql-credfile"), 0);
    snprintf(path, sizeof(path), "%s/sa.json", dir);
    json_t *o = sa_json();
    write_json(path, o);
    char *text = json_dumps(o, 0);
    json_decref(o);

    struct csql_config cfg = {0};
    csql__creds *c = NULL;
    int rc;
    cfg.cred_kind = CSQL__CRED_FILE;
    cfg.credentials_file = path;
    assert_string_equal(describe_new(&cfg, &rc, &c), "service account sa@proj.iam.gserviceaccount.com");
    csql__creds_free(c);

    cfg.cred_kind = CSQL__CRED_JSON;
    cfg.credentials_json = text;
    assert_string_equal(describe_new(&cfg, &rc, &c), "service account sa@proj.iam.gserviceaccount.com");
    csql__creds_free(c);

    cfg.credentials_json = (char *)(uintptr_t) "{\"type\":\"authorized_user\"}";
    assert_null(describe_new(&cfg, &rc, &c));
    assert_int_equal(rc, CSQL_ERR_CREDENTIALS);
    assert_msg_has("credentials JSON: missing field \"client_id\"");

    cfg.cred_kind = CSQL__CRED_FILE;
    cfg.credentials_file = (char *)(uintptr_t) "/nonexistent/key.json";
    assert_null(describe_new(&cfg, &rc, &c));
    assert_int_equal(rc, CSQL_ERR_CREDENTIALS);
    assert_msg_has("credentials file /nonexistent/key.json");
    free(text);
    csqlt_rmdir(dir);
}

static void test_adc_chain_order(void **state)
{
    (void)state;
    char dir[256], env_file[512], gdir[512], gfile[600], home[512], hfile[700];
    assert_int_equal(csqlt_tempdir(dir, sizeof(dir), "csql-adc"), 0);
    snprintf(env_file, sizeof(env_file), "%s/sa.json", dir);
    snprintf(gdir, sizeof(gdir), "%s/gcloud", dir);
    snprintf(gfile, sizeof(gfile), "%s/application_default_credentials.json", gdir);
    snprintf(home, sizeof(home), "%s/home", dir);
    snprintf(hfile, sizeof(hfile), "%s/.config/gcloud/application_default_credentials.json", home);
    assert_int_equal(mkdir(gdir, 0700), 0);
    char mk[800];
    snprintf(mk, sizeof(mk), "%s/.config/gcloud", home);
    assert_int_equal(csqlt_sh(NULL, 0, "mkdir -p '%s'", mk), 0);
    json_t *o = sa_json();
    write_json(env_file, o);
    json_decref(o);
    o = user_json();
    write_json(gfile, o);
    json_object_set_new(o, "client_id", json_string("home-client"));
    write_json(hfile, o);
    json_decref(o);

    const char *old_home = getenv("HOME");
    char *saved_home = old_home ? strdup(old_home) : NULL;
    struct csql_config cfg = {0};
    cfg.cred_kind = CSQL__CRED_ADC;
    csql__creds *c = NULL;
    int rc;
    unset_adc_env();
    setenv("HOME", home, 1);
    setenv("GCE_METADATA_HOST", "127.0.0.1:1", 1);

    /* env file wins over gcloud file wins over metadata */
    setenv("GOOGLE_APPLICATION_CREDENTIALS", env_file, 1);
    setenv("CLOUDSDK_CONFIG", gdir, 1);
    assert_string_equal(describe_new(&cfg, &rc, &c), "service account sa@proj.iam.gserviceaccount.com");
    csql__creds_free(c);

    unsetenv("GOOGLE_APPLICATION_CREDENTIALS");
    assert_string_equal(describe_new(&cfg, &rc, &c),
                        "authorized user (client cid.apps.googleusercontent.com)");
    csql__creds_free(c);

    unsetenv("CLOUDSDK_CONFIG"); /* falls back to $HOME/.config/gcloud */
    assert_string_equal(describe_new(&cfg, &rc, &c), "authorized user (client home-client)");
    csql__creds_free(c);

    unlink(hfile);
    assert_string_equal(describe_new(&cfg, &rc, &c), "metadata server 127.0.0.1:1");
    csql__creds_free(c);

    unsetenv("GCE_METADATA_HOST");
    assert_string_equal(describe_new(&cfg, &rc, &c), "metadata server metadata.google.internal");
    csql__creds_free(c);

    /* Set but unreadable: an error naming it, not a fall-through. */
    setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/adc.json", 1);
    assert_null(describe_new(&cfg, &rc, &c));
    assert_int_equal(rc, CSQL_ERR_CREDENTIALS);
    assert_msg_has("GOOGLE_APPLICATION_CREDENTIALS file /nonexistent/adc.json");
    /* Empty means unset. */
    setenv("GOOGLE_APPLICATION_CREDENTIALS", "", 1);
    setenv("GCE_METADATA_HOST", "127.0.0.1:1", 1);
    assert_string_equal(describe_new(&cfg, &rc, &c), "metadata server 127.0.0.1:1");
    csql__creds_free(c);

    /* A bad gcloud file is an error too. */
    unsetenv("GOOGLE_APPLICATION_CREDENTIALS");
    setenv("CLOUDSDK_CONFIG", gdir, 1);
    write_file(gfile, "{\"type\":\"authorized_user\",\"client_id\":\"x\"}");
    assert_null(describe_new(&cfg, &rc, &c));
    assert_msg_has("gcloud credentials file");
    assert_msg_has("client_secret");

    /* A metadata host with a scheme is refused. */
    unsetenv("CLOUDSDK_CONFIG");
    setenv("GCE_METADATA_HOST", "http://169.254.169.254", 1);
    assert_null(describe_new(&cfg, &rc, &c));
    assert_int_equal(rc, CSQL_ERR_BAD_CONFIG);
    assert_msg_has("GCE_METADATA_HOST");

    unset_adc_env();
    if (saved_home) {
        setenv("HOME", saved_home, 1);
        free(saved_home);
    }
    csqlt_rmdir(dir);
}

/* ---------------- allocation failures inside jansson ---------------- */

static long g_allocs_left;

static void *failing_malloc(size_t n)
{
    if (g_allocs_left-- <= 0) {
        return NULL;
    }
    return malloc(n);
}

static void test_parse_survives_allocation_failures(void **state)
{
    (void)state;
    json_t *objs[2] = {sa_json(), user_json()};
    for (int k = 0; k < 2; k++) {
        char *text = json_dumps(objs[k], 0);
        bool succeeded = false;
        for (long n = 0; n < 500 && !succeeded; n++) {
            csql__creds_file f;
            g_allocs_left = n;
            json_set_alloc_funcs(failing_malloc, free);
            int rc = csql__creds_file_parse(text, strlen(text), "credentials JSON", &f);
            json_set_alloc_funcs(malloc, free);
            if (rc == CSQL_OK) {
                succeeded = true;
                csql__creds_file_dispose(&f);
            } else {
                /* jansson does not always tell an allocation failure from bad input */
                assert_true(rc == CSQL_ERR_NOMEM || rc == CSQL_ERR_CREDENTIALS);
                assert_null(f.client_email);
                assert_null(f.client_id);
            }
        }
        assert_true(succeeded);
        free(text);
        json_decref(objs[k]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_service_account),
        cmocka_unit_test(test_authorized_user),
        cmocka_unit_test(test_every_missing_field_named),
        cmocka_unit_test(test_unknown_type),
        cmocka_unit_test(test_bad_json_not_quoted),
        cmocka_unit_test(test_bad_token_uri),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_private_key_must_be_rsa_pem),
        cmocka_unit_test(test_creds_new_file_and_json),
        cmocka_unit_test(test_adc_chain_order),
        cmocka_unit_test(test_parse_survives_allocation_failures),
    };
    return cmocka_run_group_tests(tests, setup_keys, teardown_keys);
}
