/* Fault injection and request counters (see faults.h). */
#include "faults.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static const char *const ENDPOINT_NAMES[EMU_EP_COUNT] = {
    [EMU_EP_CONNECT_SETTINGS] = "connectSettings",
    [EMU_EP_GENERATE_EPHEMERAL_CERT] = "generateEphemeralCert",
    [EMU_EP_GET_INSTANCE] = "getInstance",
    [EMU_EP_CREATE_EPHEMERAL] = "createEphemeral",
    [EMU_EP_TOKEN] = "token",
    [EMU_EP_METADATA] = "metadata",
    [EMU_EP_GENERATE_ACCESS_TOKEN] = "generateAccessToken",
};

const char *emu_endpoint_name(emu_endpoint ep)
{
    if (ep == EMU_EP_ANY)
        return "*";
    return (unsigned)ep < EMU_EP_COUNT ? ENDPOINT_NAMES[ep] : "?";
}

int emu_endpoint_from_name(const char *name, emu_endpoint *out)
{
    if (strcmp(name, "*") == 0) {
        *out = EMU_EP_ANY;
        return 0;
    }
    for (int i = 0; i < EMU_EP_COUNT; i++) {
        if (strcmp(name, ENDPOINT_NAMES[i]) == 0) {
            *out = (emu_endpoint)i;
            return 0;
        }
    }
    return -1;
}

const char *emu_http_status_name(int status)
{
    switch (status) {
    case 400: return "INVALID_ARGUMENT";
    case 401: return "UNAUTHENTICATED";
    case 403: return "PERMISSION_DENIED";
    case 404: return "NOT_FOUND";
    case 409: return "ABORTED";
    case 412: return "FAILED_PRECONDITION";
    case 413: return "INVALID_ARGUMENT";
    case 429: return "RESOURCE_EXHAUSTED";
    case 499: return "CANCELLED";
    case 501: return "UNIMPLEMENTED";
    case 503: return "UNAVAILABLE";
    case 504: return "DEADLINE_EXCEEDED";
    default: return status >= 500 ? "INTERNAL" : "FAILED_PRECONDITION";
    }
}

/* ---------------- parsing ---------------- */

static int json_long_in(const json_t *v, const char *key, long min, long max, long *out,
                        char *err, size_t errlen)
{
    if (!json_is_integer(v))
        return emu_fail(err, errlen, "fault: %s must be an integer", key);
    json_int_t x = json_integer_value(v);
    if (x < min || x > max)
        return emu_fail(err, errlen, "fault: %s %lld is out of range [%ld, %ld]", key,
                        (long long)x, min, max);
    *out = (long)x;
    return 0;
}

static int json_str_into(const json_t *v, const char *key, char *dst, size_t cap, char *err,
                         size_t errlen)
{
    if (!json_is_string(v))
        return emu_fail(err, errlen, "fault: %s must be a string", key);
    if (emu_copy(dst, cap, json_string_value(v)) != 0)
        return emu_fail(err, errlen, "fault: %s is longer than %zu bytes", key, cap - 1);
    return 0;
}

static int fault_set(emu_fault *f, const char *key, const json_t *v, char *err, size_t errlen)
{
    long x = 0;
    if (strcmp(key, "endpoint") == 0) {
        if (!json_is_string(v) || emu_endpoint_from_name(json_string_value(v), &f->endpoint))
            return emu_fail(err, errlen,
                            "fault: unknown endpoint '%s' (want connectSettings, "
                            "generateEphemeralCert, getInstance, createEphemeral, token, "
                            "metadata, generateAccessToken or *)",
                            json_is_string(v) ? json_string_value(v) : "(not a string)");
        return 0;
    }
    if (strcmp(key, "instance") == 0)
        return json_str_into(v, key, f->instance, sizeof f->instance, err, errlen);
    if (strcmp(key, "message") == 0)
        return json_str_into(v, key, f->message, sizeof f->message, err, errlen);
    if (strcmp(key, "reason") == 0)
        return json_str_into(v, key, f->reason, sizeof f->reason, err, errlen);
    if (strcmp(key, "status") == 0) {
        if (json_long_in(v, key, 0, 599, &x, err, errlen))
            return -1;
        if (x != 0 && x < 400)
            return emu_fail(err, errlen,
                            "fault: status %ld is not an error status (want 400-599, or 0)", x);
        f->status = (int)x;
        return 0;
    }
    if (strcmp(key, "retry_after") == 0)
        return json_long_in(v, key, 0, EMU_FAULT_RETRY_AFTER_MAX, &f->retry_after, err, errlen);
    if (strcmp(key, "latency_ms") == 0)
        return json_long_in(v, key, 0, EMU_FAULT_LATENCY_MAX_MS, &f->latency_ms, err, errlen);
    if (strcmp(key, "count") == 0)
        return json_long_in(v, key, 1, EMU_FAULT_COUNT_MAX, &f->count, err, errlen);
    if (strcmp(key, "malformed") == 0) {
        if (!json_is_boolean(v))
            return emu_fail(err, errlen, "fault: malformed must be true or false");
        f->malformed = json_is_true(v);
        return 0;
    }
    return emu_fail(err, errlen,
                    "fault: unknown key '%s' (want endpoint, instance, status, message, "
                    "reason, retry_after, latency_ms, malformed, count)",
                    key);
}

int emu_fault_from_json(json_t *obj, emu_fault *out, char *err, size_t errlen)
{
    emu_fault f = {.endpoint = EMU_EP_COUNT + 1, .count = -1};
    const char *key;
    const json_t *v;

    if (!json_is_object(obj))
        return emu_fail(err, errlen, "fault: want a JSON object");
    json_object_foreach(obj, key, v) {
        if (fault_set(&f, key, v, err, errlen))
            return -1;
    }
    if ((int)f.endpoint == EMU_EP_COUNT + 1)
        return emu_fail(err, errlen, "fault: endpoint is required");
    if (f.status == 0 && f.latency_ms == 0 && !f.malformed)
        return emu_fail(err, errlen, "fault: has no effect (set status, latency_ms or malformed)");
    if (f.retry_after && !f.status)
        return emu_fail(err, errlen, "fault: retry_after needs a status");
    *out = f;
    return 0;
}

/* A spec value as the JSON type its key wants, so both forms share one parser. */
static json_t *spec_value(const char *key, const char *value)
{
    static const char *const INTS[] = {"status", "retry_after", "latency_ms", "count"};
    for (size_t i = 0; i < sizeof INTS / sizeof INTS[0]; i++) {
        if (strcmp(key, INTS[i]) == 0) {
            long x = 0;
            if (emu_parse_long(value, -1, EMU_FAULT_COUNT_MAX, &x) != 0)
                return json_string(value); /* reported as "must be an integer" */
            return json_integer(x);
        }
    }
    if (strcmp(key, "malformed") == 0) {
        if (strcmp(value, "true") == 0 || strcmp(value, "1") == 0)
            return json_true();
        if (strcmp(value, "false") == 0 || strcmp(value, "0") == 0)
            return json_false();
    }
    return json_string(value);
}

int emu_fault_from_spec(const char *spec, emu_fault *out, char *err, size_t errlen)
{
    json_t *obj = json_object();
    int rc = -1;
    size_t len = strlen(spec), pos = 0, at = 0;
    char key[64], value[1024];
    int r;

    while ((r = emu_kv_next(spec, len, &pos, key, sizeof key, value, sizeof value)) != 0) {
        if (r < 0) {
            emu_fail(err, errlen, "fault '%s': '%.*s' is not key=value (or is too long)", spec,
                     (int)(pos - at - 1), spec + at);
            goto out;
        }
        at = pos;
        if (json_object_get(obj, key)) {
            emu_fail(err, errlen, "fault '%s': key '%s' given twice", spec, key);
            goto out;
        }
        json_object_set_new(obj, key, spec_value(key, value));
    }
    rc = emu_fault_from_json(obj, out, err, errlen);
out:
    json_decref(obj);
    return rc;
}

json_t *emu_fault_to_json(const emu_fault *f)
{
    json_t *o = json_pack("{s:s}", "endpoint", emu_endpoint_name(f->endpoint));
    if (f->instance[0])
        json_object_set_new(o, "instance", json_string(f->instance));
    if (f->status)
        json_object_set_new(o, "status", json_integer(f->status));
    if (f->message[0])
        json_object_set_new(o, "message", json_string(f->message));
    if (f->reason[0])
        json_object_set_new(o, "reason", json_string(f->reason));
    if (f->retry_after)
        json_object_set_new(o, "retry_after", json_integer(f->retry_after));
    if (f->latency_ms)
        json_object_set_new(o, "latency_ms", json_integer(f->latency_ms));
    if (f->malformed)
        json_object_set_new(o, "malformed", json_true());
    if (f->count >= 0)
        json_object_set_new(o, "count", json_integer(f->count));
    return o;
}

/* ---------------- the fault table ---------------- */

struct emu_faults {
    pthread_mutex_t mu;
    emu_fault items[EMU_MAX_FAULTS];
    size_t n;
};

emu_faults *emu_faults_new(void)
{
    emu_faults *fs = calloc(1, sizeof *fs);
    if (fs)
        pthread_mutex_init(&fs->mu, NULL);
    return fs;
}

void emu_faults_free(emu_faults *fs)
{
    if (!fs)
        return;
    pthread_mutex_destroy(&fs->mu);
    free(fs);
}

int emu_faults_add(emu_faults *fs, const emu_fault *f)
{
    int rc = -1;
    pthread_mutex_lock(&fs->mu);
    if (fs->n < EMU_MAX_FAULTS) {
        fs->items[fs->n++] = *f;
        rc = 0;
    }
    pthread_mutex_unlock(&fs->mu);
    return rc;
}

void emu_faults_clear(emu_faults *fs)
{
    pthread_mutex_lock(&fs->mu);
    fs->n = 0;
    pthread_mutex_unlock(&fs->mu);
}

json_t *emu_faults_json(emu_faults *fs)
{
    json_t *arr = json_array();
    pthread_mutex_lock(&fs->mu);
    for (size_t i = 0; i < fs->n; i++)
        json_array_append_new(arr, emu_fault_to_json(&fs->items[i]));
    pthread_mutex_unlock(&fs->mu);
    return arr;
}

static bool fault_matches(const emu_fault *f, emu_endpoint ep, const char *instance)
{
    if (f->endpoint != EMU_EP_ANY && f->endpoint != ep)
        return false;
    if (!f->instance[0])
        return true;
    return instance && strcmp(f->instance, instance) == 0;
}

bool emu_faults_take(emu_faults *fs, emu_endpoint ep, const char *instance, emu_fault *out)
{
    bool found = false;
    pthread_mutex_lock(&fs->mu);
    for (size_t i = 0; i < fs->n; i++) {
        emu_fault *f = &fs->items[i];
        if (!fault_matches(f, ep, instance))
            continue;
        *out = *f;
        found = true;
        if (f->count > 0 && --f->count == 0) {
            memmove(f, f + 1, (fs->n - i - 1) * sizeof *f);
            fs->n--;
        }
        break;
    }
    pthread_mutex_unlock(&fs->mu);
    return found;
}

/* ---------------- counters ---------------- */

struct emu_counters {
    pthread_mutex_t mu;
    size_t n_instances;
    char **names;
    uint64_t total[EMU_EP_COUNT];
    uint64_t *per_instance; /* [EMU_EP_COUNT][n_instances] */
};

emu_counters *emu_counters_new(emu_instance *const *instances, size_t n)
{
    emu_counters *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    pthread_mutex_init(&c->mu, NULL);
    c->n_instances = n;
    c->names = calloc(n ? n : 1, sizeof *c->names);
    c->per_instance = calloc(EMU_EP_COUNT * (n ? n : 1), sizeof *c->per_instance);
    if (!c->names || !c->per_instance) {
        emu_counters_free(c);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        c->names[i] = strdup(instances[i]->connection_name);
        if (!c->names[i]) {
            emu_counters_free(c);
            return NULL;
        }
    }
    return c;
}

void emu_counters_free(emu_counters *c)
{
    if (!c)
        return;
    for (size_t i = 0; c->names && i < c->n_instances; i++)
        free(c->names[i]);
    free(c->names);
    free(c->per_instance);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

void emu_counters_hit(emu_counters *c, emu_endpoint ep, int instance_index)
{
    if ((unsigned)ep >= EMU_EP_COUNT)
        return;
    pthread_mutex_lock(&c->mu);
    c->total[ep]++;
    if (instance_index >= 0 && (size_t)instance_index < c->n_instances)
        c->per_instance[(size_t)ep * c->n_instances + (size_t)instance_index]++;
    pthread_mutex_unlock(&c->mu);
}

uint64_t emu_counters_get(emu_counters *c, emu_endpoint ep, int instance_index)
{
    uint64_t v = 0;
    if ((unsigned)ep >= EMU_EP_COUNT)
        return 0;
    pthread_mutex_lock(&c->mu);
    if (instance_index < 0)
        v = c->total[ep];
    else if ((size_t)instance_index < c->n_instances)
        v = c->per_instance[(size_t)ep * c->n_instances + (size_t)instance_index];
    pthread_mutex_unlock(&c->mu);
    return v;
}

void emu_counters_reset(emu_counters *c)
{
    pthread_mutex_lock(&c->mu);
    memset(c->total, 0, sizeof c->total);
    memset(c->per_instance, 0, EMU_EP_COUNT * (c->n_instances ? c->n_instances : 1) *
                                   sizeof *c->per_instance);
    pthread_mutex_unlock(&c->mu);
}

json_t *emu_counters_json(emu_counters *c)
{
    json_t *out = json_object();
    pthread_mutex_lock(&c->mu);
    for (int ep = 0; ep < EMU_EP_COUNT; ep++) {
        json_t *per = json_object();
        for (size_t i = 0; i < c->n_instances; i++)
            json_object_set_new(per, c->names[i],
                                json_integer((json_int_t)c->per_instance[(size_t)ep *
                                                                             c->n_instances +
                                                                         i]));
        json_object_set_new(out, ENDPOINT_NAMES[ep],
                            json_pack("{s:I,s:o}", "total", (json_int_t)c->total[ep],
                                      "instances", per));
    }
    pthread_mutex_unlock(&c->mu);
    return out;
}
