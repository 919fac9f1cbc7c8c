/* jsonlift.h — jansson's json_loadb, faster on documents that are mostly long plain strings
 * (a SendEmail body is one 1.4 KB base64 string in 1.5 KB of JSON).
 *
 * Why: jansson lexes every byte of a string through its stream reader and string buffer
 * (about 15 ns a byte here), so the base64 of a message cost more than anything else in an
 * API request's preparation. jsonlift_loadb scans the text once for string values of at
 * least JSONLIFT_MIN bytes made only of printable ASCII other than '"' and '\\' (no
 * escapes to undo, valid UTF-8), has jansson parse the text with each of them replaced by a
 * short stand-in, then puts the original bytes back as strings (json_stringn_nocheck,
 * which copies without checking again). The result equals json_loadb's with the same
 * flags, as test_jsonlift and fuzz_model check: stand-ins are "\u0000" and a number,
 * which no string of the input can be (a document that spells "\u0000" anywhere, or with
 * JSON_ALLOW_NUL, is parsed by json_loadb alone); object keys are never replaced; and a
 * document the lifted parse refuses is parsed again by json_loadb, so its error (text,
 * line, column) is jansson's own. */
#ifndef KILN_JSONLIFT_H
#define KILN_JSONLIFT_H

#include <jansson.h>
#include <stddef.h>

#define JSONLIFT_MIN 256   /* shortest string value lifted out */

json_t *jsonlift_loadb(const char *text, size_t len, size_t flags, json_error_t *error);

#endif
