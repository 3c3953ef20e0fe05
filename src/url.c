/*
 * Base URL rules: http:// or https:// with a host; plain http only to a
 * loopback host, so tokens never cross a network unencrypted.
 */
#include "url.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define HOST_MAX 256
#define URL_MAX 4096

int csql__host_is_loopback(const char *host)
{
    if (host == NULL) {
        return 0;
    }
    if (strcasecmp(host, "localhost") == 0 || strcasecmp(host, "localhost.") == 0) {
        return 1;
    }
    struct in_addr a4;
    if (inet_pton(AF_INET, host, &a4) == 1) {
        return (ntohl(a4.s_addr) >> 24) == 127;
    }
    struct in6_addr a6;
    if (inet_pton(AF_INET6, host, &a6) == 1) {
        if (IN6_IS_ADDR_LOOPBACK(&a6)) {
            return 1;
        }
        return IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127;
    }
    return 0;
}

static int host_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_';
}

/* Split the authority [start, end) into host (copied to host) and check the port. */
static int parse_authority(const char *start, const char *end, char *host, size_t hostlen)
{
    const char *h = start;
    const char *hend;
    const char *rest;
    if (h < end && *h == '[') {
        const char *close = memchr(h, ']', (size_t)(end - h));
        if (close == NULL) {
            return 0;
        }
        h++;
        hend = close;
        rest = close + 1;
        for (const char *p = h; p < hend; p++) {
            if (!(strchr("0123456789abcdefABCDEF:.", *p) != NULL)) {
                return 0;
            }
        }
    } else {
        hend = h;
        while (hend < end && *hend != ':') {
            if (!host_char(*hend)) {
                return 0;
            }
            hend++;
        }
        rest = hend;
    }
    size_t hn = (size_t)(hend - h);
    if (hn == 0 || hn >= hostlen) {
        return 0;
    }
    memcpy(host, h, hn);
    host[hn] = '\0';
    if (rest == end) {
        return 1;
    }
    if (*rest != ':' || rest + 1 == end || end - rest > 6) {
        return 0;
    }
    long port = 0;
    for (const char *p = rest + 1; p < end; p++) {
        if (*p < '0' || *p > '9') {
            return 0;
        }
        port = port * 10 + (*p - '0');
    }
    return port >= 1 && port <= 65535;
}

int csql__url_allowed(const char *url)
{
    if (url == NULL) {
        return 0;
    }
    size_t n = strnlen(url, URL_MAX + 1);
    if (n > URL_MAX) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)url[i];
        if (c <= 0x20 || c >= 0x7f) {
            return 0; /* no spaces or control bytes: the URL goes on the wire */
        }
    }
    int plain;
    const char *auth;
    if (strncasecmp(url, "https://", 8) == 0) {
        plain = 0;
        auth = url + 8;
    } else if (strncasecmp(url, "http://", 7) == 0) {
        plain = 1;
        auth = url + 7;
    } else {
        return 0;
    }
    const char *end = auth + strcspn(auth, "/?#");
    /* Credentials in a URL are refused: they would end up in logs and messages. */
    if (memchr(auth, '@', (size_t)(end - auth)) != NULL) {
        return 0;
    }
    char host[HOST_MAX];
    if (!parse_authority(auth, end, host, sizeof(host))) {
        return 0;
    }
    return !plain || csql__host_is_loopback(host);
}

void csql__url_redact(const char *url, char *buf, size_t len)
{
    if (len == 0) {
        return;
    }
    if (url == NULL) {
        snprintf(buf, len, "(null)");
        return;
    }
    /* A scheme is only a scheme before any '/', '?', '#' or '@'. */
    const char *scheme_end = strstr(url, "://");
    if (scheme_end != NULL && strcspn(url, "/?#@") < (size_t)(scheme_end - url)) {
        scheme_end = NULL;
    }
    const char *auth = scheme_end ? scheme_end + 3 : url;
    const char *end = auth + strcspn(auth, "/?#");
    const char *at = NULL;
    for (const char *p = auth; p < end; p++) {
        if (*p == '@') {
            at = p;
        }
    }
    size_t o = 0;
    for (const char *p = url; *p != '\0' && o + 1 < len; p++) {
        if (at != NULL && p == auth) {
            for (const char *m = "***"; *m != '\0' && o + 1 < len; m++) {
                buf[o++] = *m;
            }
            p = at; /* go on with the '@' */
            if (o + 1 >= len) {
                break;
            }
        }
        unsigned char c = (unsigned char)*p;
        buf[o++] = (c < 0x20 || c >= 0x7f) ? '?' : (char)c;
    }
    buf[o] = '\0';
}
