/* fuzz_template.c — fuzz target for SES templates (api/template.h). Input: a template,
 * optionally followed by a NUL byte and TemplateData as JSON (an object; anything else and
 * a fixed sample object is used). Promises checked: template_check and template_render
 * agree on the syntax (the same error text, with an offset inside the template); a
 * rendering succeeds or fails only with SES's missing-attribute text, the unprintable
 * object/array error, or the output or step cap; the output is at most the cap; a template without "{{" renders to itself. Rendering
 * stays bounded however the loops nest (the step budget). Built for libFuzzer by
 * `make fuzz`, replayed over its corpus and mutations in `make check`. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/template.h"
#include "base/util.h"

#define FUZZ_MAX_OUT 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char fuzz_sample[] =
    "{\"name\": \"Ana\", \"n\": 3, \"r\": 1.5, \"t\": true, \"f\": false, \"z\": null, \"e\": \"\","
    " \"o\": {\"a\": {\"b\": \"deep\"}, \"k\": 1}, \"l\": [\"x\", {\"name\": \"in\"}, [1, 2], 0],"
    " \"items\": [{\"name\": \"pen\", \"tags\": [\"a\", \"b\"]}, {\"name\": \"ink\", \"tags\": []}]}";

static bool fuzz_prefix(const char *s, const char *p)
{
    return strncmp(s, p, strlen(p)) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t tlen = nul ? (size_t)(nul - data) : size;
    char *tmpl = util_strndup((const char *)data, tlen);
    json_t *d = NULL;
    if (nul) d = json_loadb((const char *)nul + 1, size - tlen - 1, 0, NULL);
    if (!json_is_object(d)) {
        json_decref(d);
        d = json_loads(fuzz_sample, 0, NULL);
        if (!d) abort();
    }

    char *cerr = NULL, *rerr = NULL;
    int ok = template_check(tmpl, &cerr);
    char *out = template_render(tmpl, d, FUZZ_MAX_OUT, &rerr);
    if (ok != 0) {
        /* the same syntax error from both, at an offset inside the template */
        if (!cerr || out || !rerr || strcmp(cerr, rerr) != 0) abort();
        if (!fuzz_prefix(cerr, "Template syntax error at offset ")) abort();
        size_t off = strtoul(cerr + strlen("Template syntax error at offset "), NULL, 10);
        if (off >= tlen) abort();
    } else if (!out) {
        if (!rerr) abort();
        if (!fuzz_prefix(rerr, "Attribute '") && !fuzz_prefix(rerr, "Rendered template is larger than ") &&
            !fuzz_prefix(rerr, "Rendering the template takes more than "))
            abort();
        if (fuzz_prefix(rerr, "Attribute '") && !strstr(rerr, "' is not present in the rendering data.") &&
            !strstr(rerr, "which cannot be printed."))
            abort();
    } else {
        size_t n = strlen(out);
        if (n > FUZZ_MAX_OUT) abort();
        if (!strstr(tmpl, "{{") && strcmp(out, tmpl) != 0) abort();
    }
    free(out);
    free(cerr);
    free(rerr);
    json_decref(d);
    free(tmpl);
    return 0;
}
