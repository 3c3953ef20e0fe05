/*
 * Refresh timing (REFERENCE §2, §5): the retry backoff of the SQL Admin API
 * calls and the delay until the next refresh. Pure arithmetic.
 */
#include "refresh.h"

/* 1.618^x for x in [0, 40] without libm: integer powers times a series for the fraction. */
static double golden_pow(double x)
{
    double r = 1.0;
    int whole = (int)x;
    for (int i = 0; i < whole; i++) {
        r *= 1.618;
    }
    /* e^(f ln 1.618), f in [0, 1): the series converges to double precision in 20 terms. */
    double y = (x - whole) * 0.4811908186363;
    double term = 1.0;
    double sum = 1.0;
    for (int k = 1; k < 20; k++) {
        term *= y / k;
        sum += term;
    }
    return r * sum;
}

int64_t csql__backoff_ms(int attempt, double rand01)
{
    if (attempt < 0) {
        attempt = 0;
    }
    if (attempt > 30) {
        attempt = 30; /* far beyond any deadline; keeps the result finite */
    }
    if (!(rand01 >= 0.0)) {
        rand01 = 0.0;
    }
    if (rand01 >= 1.0) {
        rand01 = 0.999999;
    }
    return (int64_t)(200.0 * golden_pow(attempt + 1 + rand01) + 0.5);
}

int64_t csql__refresh_delay_s(int64_t expires_at, int64_t now)
{
    int64_t d = expires_at - now;
    if (d >= 3600) {
        return d / 2;
    }
    if (d >= 240) {
        return d - 240;
    }
    return 0;
}
