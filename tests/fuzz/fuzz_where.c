/* libFuzzer target: get_all_records_where expressions (a parser that reads the network). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"
#include "xapid.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *expr = xstrndup((const char *)data, size);
    for (size_t i = 0; i < api_nclasses; i += 5) {
        char *sql = NULL;
        xv *args = NULL;
        xerr *e = where_to_sql(&api_classes[i], expr, &sql, &args);
        if (!e && (!sql || !args))
            abort();
        free(sql);
        xv_free(args);
        xerr_free(e);
    }
    free(expr);
    return 0;
}
