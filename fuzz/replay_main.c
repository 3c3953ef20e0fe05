/*
 * Corpus replay driver for builds without libFuzzer (gcc, the default):
 * runs LLVMFuzzerTestOneInput once over every regular file of each directory
 * (or file) named on the command line, in name order, so that ctest checks
 * every seed and every minimized crash under the build's sanitizers.
 * Each input is copied into a buffer of exactly its size, so ASan sees any
 * read past its end. Exits 1 when an argument is missing, unreadable or an
 * empty directory, so a broken corpus path cannot pass silently.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define REPLAY_MAX_INPUT (1024 * 1024)
#define REPLAY_MAX_FILES 100000

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

/* Run one file; 0, or -1 if it cannot be read. */
static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    uint8_t *buf = malloc(REPLAY_MAX_INPUT + 1);
    size_t n = buf ? fread(buf, 1, REPLAY_MAX_INPUT + 1, f) : 0;
    int bad = buf == NULL || ferror(f) || n > REPLAY_MAX_INPUT;
    fclose(f);
    if (bad) {
        fprintf(stderr, "replay: %s: unreadable or larger than %d bytes\n", path,
                REPLAY_MAX_INPUT);
        free(buf);
        return -1;
    }
    /* An exact-size copy: one byte past the input is outside the allocation. */
    uint8_t *exact = malloc(n ? n : 1);
    if (exact == NULL) {
        free(buf);
        return -1;
    }
    memcpy(exact, buf, n);
    free(buf);
    LLVMFuzzerTestOneInput(exact, n);
    free(exact);
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Replay every regular file of dir; the number replayed, or -1. */
static long replay_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
        return -1;
    }
    char **names = NULL;
    size_t count = 0;
    size_t cap = 0;
    long rc = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL && count < REPLAY_MAX_FILES) {
        if (de->d_name[0] == '.') {
            continue;
        }
        if (count == cap) {
            cap = cap ? cap * 2 : 64;
            char **grown = realloc(names, cap * sizeof(*names));
            if (grown == NULL) {
                rc = -1;
                break;
            }
            names = grown;
        }
        if ((names[count] = strdup(de->d_name)) == NULL) {
            rc = -1;
            break;
        }
        count++;
    }
    closedir(d);
    if (count > 0) {
        qsort(names, count, sizeof(*names), by_name);
    }
    long done = 0;
    for (size_t i = 0; i < count; i++) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        if (rc == 0 && stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
            if (replay_file(path) != 0) {
                rc = -1;
            } else {
                done++;
            }
        }
        free(names[i]);
    }
    free(names);
    return rc < 0 ? -1 : done;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR_OR_FILE...\n", argv[0]);
        return 2;
    }
    if (LLVMFuzzerInitialize != NULL) {
        LLVMFuzzerInitialize(&argc, &argv);
    }
    int status = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
            status = 1;
            continue;
        }
        long n = S_ISDIR(st.st_mode) ? replay_dir(argv[i]) : (replay_file(argv[i]) == 0 ? 1 : -1);
        if (n <= 0) {
            fprintf(stderr, "replay: %s: %s\n", argv[i], n == 0 ? "no inputs" : "failed");
            status = 1;
        } else {
            printf("replay: %s: %ld inputs\n", argv[i], n);
        }
    }
    return status;
}
