/*
 * Fault injection and request counters for csql-emulator's HTTP endpoints.
 * Faults come from --fault, the config file, or POST /emulator/faults; each
 * matches an endpoint (or "*") and optionally one instance, and may answer an
 * error status, add latency, or send a malformed body, for the next `count`
 * requests or until cleared. Thread-safe.
 */
#ifndef CSQL_EMULATOR_FAULTS_H
#define CSQL_EMULATOR_FAULTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "emulator.h"

/* Endpoints that are counted and can be faulted. */
typedef enum emu_endpoint {
    EMU_EP_CONNECT_SETTINGS = 0,
    EMU_EP_GENERATE_EPHEMERAL_CERT,
    EMU_EP_GET_INSTANCE,
    EMU_EP_CREATE_EPHEMERAL,
    EMU_EP_TOKEN,
    EMU_EP_METADATA,
    EMU_EP_GENERATE_ACCESS_TOKEN,
    EMU_EP_COUNT,
    EMU_EP_ANY = EMU_EP_COUNT /* "*" in a fault */
} emu_endpoint;

const char *emu_endpoint_name(emu_endpoint ep);
/* "*" gives EMU_EP_ANY. -1 for an unknown name. */
int emu_endpoint_from_name(const char *name, emu_endpoint *out);

#define EMU_FAULT_LATENCY_MAX_MS 60000L
#define EMU_FAULT_RETRY_AFTER_MAX 3600L
#define EMU_FAULT_COUNT_MAX 1000000L
#define EMU_MAX_FAULTS 256

typedef struct emu_fault {
    emu_endpoint endpoint;
    char instance[256]; /* connection name; "" matches every instance */
    int status;         /* 0: answer normally (after latency / malformed) */
    char message[512];  /* "" gives a default message for the status */
    char reason[64];    /* Google status string; "" derives it from status */
    long retry_after;   /* seconds for the Retry-After header; 0: none */
    long latency_ms;    /* delay before answering */
    bool malformed;     /* cut the body in half (invalid JSON) */
    long count;         /* requests left; -1: until cleared */
} emu_fault;

/* Parse {"endpoint":..., "status":..., ...} strictly (unknown keys are errors). */
int emu_fault_from_json(json_t *obj, emu_fault *out, char *err, size_t errlen);
/* Parse "endpoint=token&status=503&..." (the --fault form) strictly. */
int emu_fault_from_spec(const char *spec, emu_fault *out, char *err, size_t errlen);
json_t *emu_fault_to_json(const emu_fault *f);

/* The Google status for an HTTP code: 404 -> "NOT_FOUND", ... */
const char *emu_http_status_name(int status);

typedef struct emu_faults emu_faults;
emu_faults *emu_faults_new(void);
void emu_faults_free(emu_faults *fs);
/* -1 when EMU_MAX_FAULTS are already set. */
int emu_faults_add(emu_faults *fs, const emu_fault *f);
void emu_faults_clear(emu_faults *fs);
json_t *emu_faults_json(emu_faults *fs);
/*
 * The first fault matching (endpoint, instance) is copied to *out and its
 * count consumed (removed at zero). instance may be NULL (no instance).
 */
bool emu_faults_take(emu_faults *fs, emu_endpoint ep, const char *instance, emu_fault *out);

/* Request counters: per endpoint, total and per instance. */
typedef struct emu_counters emu_counters;
emu_counters *emu_counters_new(emu_instance *const *instances, size_t n);
void emu_counters_free(emu_counters *c);
/* instance_index < 0: a request that named no known instance. */
void emu_counters_hit(emu_counters *c, emu_endpoint ep, int instance_index);
uint64_t emu_counters_get(emu_counters *c, emu_endpoint ep, int instance_index);
void emu_counters_reset(emu_counters *c);
/* {"connectSettings":{"total":N,"instances":{"p:r:i":N}}, ...} */
json_t *emu_counters_json(emu_counters *c);

#endif
