/* libFuzzer target: nuvem-vmm's control-protocol parser and its VM-config parser, the two
 * places where untrusted bytes become values. Replays as a plain test without libFuzzer. */
#include "config.h"
#include "ctl.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    ctl_request r;
    xerr *e = ctl_parse_request(text, size, &r);
    char *line = e ? ctl_format_error(r.id, e)
                   : ctl_format_return(r.id, r.arguments ? xv_copy(r.arguments) : NULL);
    if (!line || !strchr(line, '\n'))
        abort(); /* every reply is one newline-terminated line */
    free(line);
    xerr_free(e);
    ctl_request_release(&r);

    xerr *ce = NULL;
    vmm_config *c = vmm_config_parse(text, size, &ce);
    if (!c == !ce)
        abort(); /* exactly one of config or error */
    vmm_config_free(c);
    xerr_free(ce);
    return 0;
}
