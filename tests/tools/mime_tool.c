/* mime_tool.c — a check program that lets tests written in Python drive api/mime.h, so
 * that a parser we did not write (Python's email package) judges kiln's messages:
 *
 *   mime_tool simple     stdin: a JSON object {"from", "to": [...], "cc": [...],
 *                        "reply_to": [...], "subject", "subject_charset", "text",
 *                        "text_charset", "html", "html_charset", "now_ms", "seed"} (all
 *                        but from and subject optional); stdout: the message
 *                        mime_build_simple writes
 *   mime_tool raw MAX    stdin: base64 text; stdout: what mime_raw_decode makes of it
 *
 * Errors go to stderr, exit status 1. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/mime.h"
#include "base/util.h"

static char *tool_stdin(size_t *len)
{
    strbuf sb;
    strbuf_init(&sb);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, stdin)) > 0) strbuf_append(&sb, buf, n);
    *len = sb.len;
    return strbuf_steal(&sb);
}

static const char *tool_str(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* The strings of an array member (NULL-terminated, malloc'd; the strings stay in o). */
static const char **tool_list(const json_t *o, const char *key, size_t *n)
{
    const json_t *a = json_object_get(o, key);
    *n = json_array_size(a);
    const char **list = util_calloc(*n + 1, sizeof *list);
    for (size_t i = 0; i < *n; i++) list[i] = json_string_value(json_array_get(a, i));
    return list;
}

static int tool_simple(void)
{
    size_t len;
    char *text = tool_stdin(&len);
    json_error_t jerr;
    json_t *o = json_loadb(text, len, 0, &jerr);
    free(text);
    if (!json_is_object(o)) {
        fprintf(stderr, "mime_tool: stdin is no JSON object: %s\n", jerr.text);
        return 2;
    }
    mime_simple in;
    memset(&in, 0, sizeof in);
    in.from = tool_str(o, "from");
    const char **to = tool_list(o, "to", &in.nto), **cc = tool_list(o, "cc", &in.ncc);
    const char **rt = tool_list(o, "reply_to", &in.nreply_to);
    in.to = to;
    in.cc = cc;
    in.reply_to = rt;
    in.subject.data = tool_str(o, "subject");
    in.subject.charset = tool_str(o, "subject_charset");
    in.text.data = tool_str(o, "text");
    in.text.charset = tool_str(o, "text_charset");
    in.html.data = tool_str(o, "html");
    in.html.charset = tool_str(o, "html_charset");
    json_t *now = json_object_get(o, "now_ms");
    in.now_ms = now ? json_integer_value(now) : util_wall_ms();
    in.boundary_seed = tool_str(o, "seed") ? tool_str(o, "seed") : "0001";
    char *err = NULL;
    char *msg = mime_build_simple(&in, &len, &err);
    int rc = 0;
    if (msg) {
        fwrite(msg, 1, len, stdout);
    } else {
        fprintf(stderr, "%s\n", err);
        rc = 1;
    }
    free(msg);
    free(err);
    free(to);
    free(cc);
    free(rt);
    json_decref(o);
    return rc;
}

static int tool_raw(const char *max)
{
    long long cap;
    if (!util_parse_ll(max, 0, 1LL << 40, &cap)) return 2;
    size_t len;
    char *b64 = tool_stdin(&len);
    char *err = NULL;
    size_t out_len = 0;
    char *out = mime_raw_decode(b64, len, (size_t)cap, &out_len, &err);
    free(b64);
    if (!out) {
        fprintf(stderr, "%s\n", err);
        free(err);
        return 1;
    }
    fwrite(out, 1, out_len, stdout);
    free(out);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "simple") == 0) return tool_simple();
    if (argc == 3 && strcmp(argv[1], "raw") == 0) return tool_raw(argv[2]);
    fprintf(stderr, "usage: mime_tool simple < JSON\n       mime_tool raw MAX < BASE64\n");
    return 2;
}
