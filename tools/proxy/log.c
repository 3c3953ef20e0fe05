/* csql-proxy logs (log.h). */
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_BYTES 4096

static struct {
    bool structured;
    csql_log_level max;
    pthread_mutex_t mu;
} L = {false, CSQL_LOG_INFO, PTHREAD_MUTEX_INITIALIZER};

void plog_init(bool structured, bool quiet, bool debug)
{
    L.structured = structured;
    L.max = quiet ? CSQL_LOG_WARN : debug ? CSQL_LOG_DEBUG : CSQL_LOG_INFO;
}

csql_log_level plog_max_level(void)
{
    return L.max;
}

static const char *severity(csql_log_level level)
{
    switch (level) {
    case CSQL_LOG_ERROR: return "ERROR";
    case CSQL_LOG_WARN: return "WARNING";
    case CSQL_LOG_DEBUG: return "DEBUG";
    default: return "INFO";
    }
}

/* JSON string body of msg into buf at *o (bounded; a cut never splits an escape). */
static void json_escape(char *buf, size_t cap, size_t *o, const char *msg)
{
    for (const unsigned char *p = (const unsigned char *)msg; *p != '\0'; p++) {
        char tmp[8];
        size_t n;
        if (*p == '"' || *p == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)*p;
            n = 2;
        } else if (*p == '\n') {
            memcpy(tmp, "\\n", 2);
            n = 2;
        } else if (*p == '\t') {
            memcpy(tmp, "\\t", 2);
            n = 2;
        } else if (*p < 0x20 || *p == 0x7f) {
            n = (size_t)snprintf(tmp, sizeof(tmp), "\\u%04x", *p);
        } else {
            tmp[0] = (char)*p;
            n = 1;
        }
        if (*o + n >= cap) {
            return;
        }
        memcpy(buf + *o, tmp, n);
        *o += n;
    }
}

size_t plog_format(char *buf, size_t cap, bool structured, csql_log_level level, long long when_us,
                   const char *msg)
{
    time_t secs = (time_t)(when_us / 1000000);
    struct tm tm;
    size_t o;
    /* Leave room for the closing "}\n" or "\n". */
    size_t body_cap = cap - 3;
    if (structured) {
        gmtime_r(&secs, &tm);
        o = (size_t)snprintf(buf, cap,
                             "{\"timestamp\":\"%04d-%02d-%02dT%02d:%02d:%02d.%06lldZ\","
                             "\"severity\":\"%s\",\"message\":\"",
                             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                             tm.tm_sec, when_us % 1000000, severity(level));
        json_escape(buf, body_cap, &o, msg);
        memcpy(buf + o, "\"}\n", 4);
        return o + 3;
    }
    localtime_r(&secs, &tm);
    o = (size_t)snprintf(buf, cap, "%04d/%02d/%02d %02d:%02d:%02d ", tm.tm_year + 1900,
                         tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    for (const char *p = msg; *p != '\0' && o < body_cap; p++) {
        buf[o++] = (*p == '\n' || *p == '\r') ? ' ' : *p; /* one event, one line */
    }
    buf[o++] = '\n';
    buf[o] = '\0';
    return o;
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

static void emit(csql_log_level level, const char *msg)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    char line[LINE_MAX_BYTES + 128];
    size_t n = plog_format(line, sizeof(line), L.structured, level,
                           (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000, msg);
    int fd = level <= CSQL_LOG_WARN ? STDERR_FILENO : STDOUT_FILENO;
    pthread_mutex_lock(&L.mu);
    write_all(fd, line, n);
    pthread_mutex_unlock(&L.mu);
}

void plog(csql_log_level level, const char *fmt, ...)
{
    if (level > L.max) {
        return;
    }
    char msg[LINE_MAX_BYTES];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    emit(level, msg);
}

void plog_csql(csql_log_level level, const char *line, void *userdata)
{
    (void)userdata;
    if (level > L.max) {
        return;
    }
    char msg[LINE_MAX_BYTES];
    snprintf(msg, sizeof(msg), "%s%s", strncmp(line, "csql: ", 6) == 0 ? "" : "csql: ", line);
    emit(level, msg);
}
