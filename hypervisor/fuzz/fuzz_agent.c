/* libFuzzer target: the guest-agent line parser (agent.h), which reads bytes a guest chose.
 * The input is fed in pieces (split at bytes the input picks) to exercise partial lines; the
 * store must stay within its bounds and every value must be valid for JSON output. Replays
 * as a plain test without libFuzzer. */
#include "agent.h"
#include "util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static agent_store s; /* large: not on the stack */
    agent_store_init(&s);
    size_t step = size ? (size_t)data[0] % 97 + 1 : 1;
    for (size_t off = 0; off < size; off += step)
        agent_store_feed(&s, data + off, size - off < step ? size - off : step);
    if (s.n > AGENT_MAX_KEYS || s.line_len > AGENT_MAX_LINE)
        abort();
    for (unsigned i = 0; i < s.n; i++) {
        if (!agent_key_valid(s.keys[i], strlen(s.keys[i])) ||
            !agent_value_valid(s.values[i], strlen(s.values[i])))
            abort();
        if (agent_store_get(&s, s.keys[i]) != s.values[i])
            abort(); /* keys are unique */
    }
    xv *d = agent_store_data(&s);
    char *json = xv_to_json(d);
    if (!json || xv_struct_len(d) != s.n)
        abort();
    free(json);
    xv_free(d);
    agent_store_clear(&s);
    return 0;
}
