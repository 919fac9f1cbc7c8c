/* util.h — allocation that never returns NULL, a growable string buffer, time helpers
 * and small string utilities shared by every kiln module.
 * Allocation failure is fatal (ARCHITECTURE.md): callers never test malloc results. */
#ifndef KILN_UTIL_H
#define KILN_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

void *util_malloc(size_t n);
void *util_calloc(size_t n, size_t size);
void *util_realloc(void *p, size_t n);
char *util_strdup(const char *s);            /* NULL in, NULL out */
/* Creates the missing directories leading to path (not path itself) with mode; 0, or -1
 * with errno set. */
int util_mkdir_parents(const char *path, unsigned mode);
char *util_strndup(const char *s, size_t n);
char *util_asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *util_vasprintf(const char *fmt, va_list ap);
_Noreturn void util_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Growable byte buffer, always NUL-terminated after len. */
typedef struct strbuf {
    char *buf;
    size_t len;
    size_t cap;
} strbuf;
void strbuf_init(strbuf *sb);
void strbuf_free(strbuf *sb);
void strbuf_reset(strbuf *sb);
void strbuf_reserve(strbuf *sb, size_t extra);
void strbuf_append(strbuf *sb, const void *data, size_t n);
void strbuf_puts(strbuf *sb, const char *s);
void strbuf_printf(strbuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void strbuf_consume(strbuf *sb, size_t n);   /* drop n bytes from the front */
char *strbuf_steal(strbuf *sb);              /* returns buf (never NULL), leaves sb empty */

/* Time. Wall clock in milliseconds since the epoch; monotonic milliseconds. */
int64_t util_wall_ms(void);
int64_t util_mono_ms(void);
/* "2026-11-22T08:28:19.123Z" into out (at least 32 bytes). */
void util_iso8601(int64_t ms, char out[32]);
/* RFC 5322 date "Sun, 22 Nov 2026 08:28:19 +0000" into out (at least 40 bytes). */
void util_rfc5322_date(int64_t ms, char out[40]);

/* Strings. */
bool util_streq_ci(const char *a, const char *b);
bool util_has_suffix_ci(const char *s, const char *suffix);
void util_lowercase(char *s);
/* Domain part of an address ("user@Example.TEST" -> "Example.TEST"), or "" if none. */
const char *util_addr_domain(const char *addr);
/* Whole-string numbers for command-line options: true and *out set when s is entirely a
 * finite number (decimal integer) within [lo, hi]. */
bool util_parse_double(const char *s, double lo, double hi, double *out);
bool util_parse_ll(const char *s, long long lo, long long hi, long long *out);
/* Random bytes from OpenSSL's CSPRNG as lowercase hex (2*n chars + NUL into out). */
void util_random_hex(char *out, size_t nbytes);

#endif
