/* Server-side proxy of csql-emulator (placeholder; real implementation follows). */
#include "emulator.h"

#include <stdio.h>
#include <string.h>

int emu_proxy_start(emu_instance *inst, const emu_proxy_config *cfg, char *err, size_t errlen)
{
    (void)inst, (void)cfg;
    snprintf(err, errlen, "server-side proxy not implemented yet");
    return -1;
}

void emu_proxy_stop(emu_instance *inst)
{
    (void)inst;
}

void emu_proxy_drop_connections(emu_instance *inst)
{
    (void)inst;
}

int emu_proxy_set_refuse(emu_instance *inst, bool refuse, char *err, size_t errlen)
{
    (void)inst, (void)refuse;
    snprintf(err, errlen, "server-side proxy not implemented yet");
    return -1;
}

void emu_proxy_stats_get(emu_instance *inst, emu_proxy_stats *out)
{
    (void)inst;
    memset(out, 0, sizeof(*out));
}
