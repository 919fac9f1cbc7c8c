/* test_smtp_parse.c — the pure SMTP parsing of mta/smtp_parse.c, table by table: command
 * verbs, MAIL FROM / RCPT TO syntax with ESMTP parameters and the exact error replies,
 * address validation, and the line reader (CRLF, bare LF, over-long lines, NUL bytes,
 * several pipelined lines in one buffer, lines split across reads). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mta/smtp_parse.h"
#include "tests/unit/testlib.h"

/* ---- verbs ---- */

typedef struct {
    const char *line;
    smtp_verb verb;
    const char *arg;
} verb_case;

static const verb_case verb_cases[] = {
    {"EHLO client.example.test", SMTP_CMD_EHLO, "client.example.test"},
    {"ehlo client", SMTP_CMD_EHLO, "client"},
    {"HeLo x", SMTP_CMD_HELO, "x"},
    {"MAIL FROM:<a@b.test> SIZE=10", SMTP_CMD_MAIL, "FROM:<a@b.test> SIZE=10"},
    {"rcpt to:<a@b.test>", SMTP_CMD_RCPT, "to:<a@b.test>"},
    {"DATA", SMTP_CMD_DATA, ""},
    {"data   ", SMTP_CMD_DATA, ""},
    {"RSET", SMTP_CMD_RSET, ""},
    {"NOOP hello there", SMTP_CMD_NOOP, "hello there"},
    {"QUIT", SMTP_CMD_QUIT, ""},
    {"VRFY bob", SMTP_CMD_VRFY, "bob"},
    {"EXPN list", SMTP_CMD_EXPN, "list"},
    {"HELP", SMTP_CMD_HELP, ""},
    {"StartTLS", SMTP_CMD_STARTTLS, ""},
    {"AUTH PLAIN AGFwcABzZWNyZXQ=", SMTP_CMD_AUTH, "PLAIN AGFwcABzZWNyZXQ="},
    {"MAILFROM:<a@b.test>", SMTP_CMD_UNKNOWN, ""},
    {"XYZZY", SMTP_CMD_UNKNOWN, ""},
    {"", SMTP_CMD_UNKNOWN, ""},
    {"BDAT 10 LAST", SMTP_CMD_UNKNOWN, "10 LAST"},
    {"QUIT\tnow", SMTP_CMD_UNKNOWN, ""},
    {"HELO  spaced\t ", SMTP_CMD_HELO, "spaced"},
};

START_TEST(test_verbs)
{
    const verb_case *c = &verb_cases[_i];
    smtp_cmd cmd;
    smtp_parse_command(c->line, strlen(c->line), &cmd);
    ck_assert_msg(cmd.verb == c->verb, "\"%s\": verb %s, want %s", c->line,
                  smtp_verb_name(cmd.verb), smtp_verb_name(c->verb));
    if (c->verb != SMTP_CMD_UNKNOWN || *c->arg) {
        ck_assert_msg(cmd.arg_len == strlen(c->arg) && memcmp(cmd.arg, c->arg, cmd.arg_len) == 0,
                      "\"%s\": arg \"%.*s\", want \"%s\"", c->line, (int)cmd.arg_len, cmd.arg,
                      c->arg);
    }
}
END_TEST

/* ---- MAIL FROM / RCPT TO ---- */

typedef struct {
    bool mail;               /* MAIL (true) or RCPT */
    const char *arg;
    const char *reply;       /* NULL: accepted */
    const char *addr;
    int64_t size;            /* -1: no SIZE */
    smtp_body body;
} path_case;

static const path_case path_cases[] = {
    {true, "FROM:<ann@example.test>", NULL, "ann@example.test", -1, SMTP_BODY_NONE},
    {true, "from:<ann@example.test>", NULL, "ann@example.test", -1, SMTP_BODY_NONE},
    {true, "FROM: <ann@example.test>", NULL, "ann@example.test", -1, SMTP_BODY_NONE},
    {true, "FROM:<>", NULL, "", -1, SMTP_BODY_NONE},
    {true, "FROM:<> SIZE=0", NULL, "", 0, SMTP_BODY_NONE},
    {true, "FROM:<a@b.test> SIZE=10485760", NULL, "a@b.test", 10485760, SMTP_BODY_NONE},
    {true, "FROM:<a@b.test> size=12 body=8bitmime", NULL, "a@b.test", 12, SMTP_BODY_8BITMIME},
    {true, "FROM:<a@b.test> BODY=7BIT", NULL, "a@b.test", -1, SMTP_BODY_7BIT},
    {true, "FROM:<a@b.test>  BODY=8BITMIME   SIZE=5", NULL, "a@b.test", 5, SMTP_BODY_8BITMIME},
    {true, "FROM:<a@b.test> AUTH=<>", NULL, "a@b.test", -1, SMTP_BODY_NONE},
    {true, "FROM:<a@b.test> AUTH=app+40example.test", NULL, "a@b.test", -1, SMTP_BODY_NONE},
    {true, "FROM:<@relay1.test,@relay2.test:ann@example.test>", NULL, "ann@example.test", -1,
     SMTP_BODY_NONE},
    {true, "FROM:<\"ann smith\"@example.test>", NULL, "\"ann smith\"@example.test", -1,
     SMTP_BODY_NONE},
    {true, "FROM:<\"a>b\"@example.test>", NULL, "\"a>b\"@example.test", -1, SMTP_BODY_NONE},
    {true, "FROM:<ann@[127.0.0.1]>", NULL, "ann@[127.0.0.1]", -1, SMTP_BODY_NONE},
    /* errors */
    {true, "FROM:ann@example.test", "501 5.5.4 Syntax: MAIL FROM:<address>", NULL, -1, 0},
    {true, "TO:<ann@example.test>", "501 5.5.4 Syntax: MAIL FROM:<address>", NULL, -1, 0},
    {true, "FROM <ann@example.test>", "501 5.5.4 Syntax: MAIL FROM:<address>", NULL, -1, 0},
    {true, "FROM:<ann@example.test", "501 5.5.4 Syntax: MAIL FROM:<address>", NULL, -1, 0},
    {true, "FROM:<ann@example.test>junk", "501 5.5.4 Syntax: MAIL FROM:<address>", NULL, -1, 0},
    {true, "", "501 5.5.4 Syntax: MAIL FROM:<address>", NULL, -1, 0},
    {true, "FROM:<ann>", "553 5.1.7 Bad sender address syntax", NULL, -1, 0},
    {true, "FROM:<ann@>", "553 5.1.7 Bad sender address syntax", NULL, -1, 0},
    {true, "FROM:<ann smith@example.test>", "553 5.1.7 Bad sender address syntax", NULL, -1, 0},
    {true, "FROM:<@relay.test>", "553 5.1.7 Bad sender address syntax", NULL, -1, 0},
    {true, "FROM:<a@b.test> SIZE=abc", "501 5.5.4 Bad SIZE parameter", NULL, -1, 0},
    {true, "FROM:<a@b.test> SIZE", "501 5.5.4 Bad SIZE parameter", NULL, -1, 0},
    {true, "FROM:<a@b.test> SIZE=99999999999999999999", "501 5.5.4 Bad SIZE parameter", NULL,
     -1, 0},
    {true, "FROM:<a@b.test> SIZE=1 SIZE=2", "501 5.5.4 Duplicate parameter: SIZE", NULL, -1, 0},
    {true, "FROM:<a@b.test> BODY=BINARYMIME", "501 5.5.4 Bad BODY parameter (7BIT or 8BITMIME)",
     NULL, -1, 0},
    {true, "FROM:<a@b.test> SMTPUTF8", "555 5.5.4 Unsupported parameter: SMTPUTF8", NULL, -1, 0},
    {true, "FROM:<a@b.test> RET=HDRS", "555 5.5.4 Unsupported parameter: RET", NULL, -1, 0},
    {true, "FROM:<a@b.test> X=", "555 5.5.4 Unsupported parameter: X", NULL, -1, 0},
    {true, "FROM:<a@b.test> =5", "501 5.5.4 Syntax: MAIL FROM:<address>", NULL, -1, 0},
    {true, "FROM:<a@b.test> AUTH=", "501 5.5.4 Bad AUTH parameter", NULL, -1, 0},
    /* RCPT */
    {false, "TO:<bob@example.test>", NULL, "bob@example.test", -1, SMTP_BODY_NONE},
    {false, "to: <Bob@Example.TEST>", NULL, "Bob@Example.TEST", -1, SMTP_BODY_NONE},
    {false, "TO:<@hop.test:bob@example.test>", NULL, "bob@example.test", -1, SMTP_BODY_NONE},
    {false, "TO:<success@simulator.amazonses.com>", NULL, "success@simulator.amazonses.com", -1,
     SMTP_BODY_NONE},
    {false, "TO:bob@example.test", "501 5.5.4 Syntax: RCPT TO:<address>", NULL, -1, 0},
    {false, "FROM:<bob@example.test>", "501 5.5.4 Syntax: RCPT TO:<address>", NULL, -1, 0},
    {false, "TO:<>", "553 5.1.3 Bad recipient address syntax", NULL, -1, 0},
    {false, "TO:<postmaster>", "553 5.1.3 Bad recipient address syntax", NULL, -1, 0},
    {false, "TO:<bob@exa_mple.test>", "553 5.1.3 Bad recipient address syntax", NULL, -1, 0},
    {false, "TO:<bob@example.test> NOTIFY=NEVER", "555 5.5.4 Unsupported parameter: NOTIFY", NULL,
     -1, 0},
    {false, "TO:<bob@example.test> SIZE=5", "555 5.5.4 Unsupported parameter: SIZE", NULL, -1, 0},
};

START_TEST(test_paths)
{
    const path_case *c = &path_cases[_i];
    smtp_path p;
    char reply[SMTP_REPLY_MAX] = "";
    int rc = c->mail ? smtp_parse_mail(c->arg, &p, reply) : smtp_parse_rcpt(c->arg, &p, reply);
    if (c->reply) {
        ck_assert_msg(rc == -1, "%s \"%s\": accepted, want \"%s\"", c->mail ? "MAIL" : "RCPT",
                      c->arg, c->reply);
        ck_assert_str_eq(reply, c->reply);
        return;
    }
    ck_assert_msg(rc == 0, "%s \"%s\": rejected with \"%s\"", c->mail ? "MAIL" : "RCPT", c->arg,
                  reply);
    ck_assert_str_eq(p.addr, c->addr);
    ck_assert_int_eq(p.has_size, c->size >= 0);
    if (c->size >= 0) ck_assert_int_eq(p.size, c->size);
    ck_assert_int_eq(p.body, c->body);
}
END_TEST

START_TEST(test_path_too_long)
{
    char arg[400], reply[SMTP_REPLY_MAX];
    smtp_path p;
    /* 60-octet local part, domain of 4 x 60-octet labels: 60+1+243 = 304 > 254. */
    char label[61];
    memset(label, 'a', 60);
    label[60] = '\0';
    snprintf(arg, sizeof arg, "TO:<%s@%s.%s.%s.%s>", label, label, label, label, label);
    ck_assert_int_eq(smtp_parse_rcpt(arg, &p, reply), -1);
    ck_assert_str_eq(reply, "553 5.1.3 Bad recipient address syntax: address too long");
}
END_TEST

/* ---- address validation ---- */

typedef struct {
    const char *addr;
    bool ok;
} addr_case;

static const addr_case addr_cases[] = {
    {"ann@example.test", true},
    {"Ann.Smith+tag@Example.TEST", true},
    {"a!#$%&'*+-/=?^_`{|}~b@example.test", true},
    {"ann@localhost", true},
    {"\"ann smith\"@example.test", true},
    {"\"a\\\"b\"@example.test", true},
    {"\"\"@example.test", true},
    {"ann@[127.0.0.1]", true},
    {"ann@[IPv6:::1]", true},
    {"ann@[ipv6:2001:db8::1]", true},
    {"ann@xn--bcher-kva.test", true},
    {"ann@a-b.c-d.test", true},
    {"", false},
    {"ann", false},
    {"@example.test", false},
    {"ann@", false},
    {"ann@@example.test", false},
    {"ann smith@example.test", false},
    {".ann@example.test", false},
    {"ann.@example.test", false},
    {"an..n@example.test", false},
    {"ann@example..test", false},
    {"ann@.example.test", false},
    {"ann@example.test.", false},
    {"ann@-example.test", false},
    {"ann@example-.test", false},
    {"ann@exa mple.test", false},
    {"ann@exa_mple.test", false},
    {"ann\t@example.test", false},
    {"ann\x01@example.test", false},
    {"\xc3\xa4nn@example.test", false},
    {"ann@\xc3\xa4.test", false},
    {"\"ann@example.test", false},
    {"\"a\x01\"@example.test", false},
    {"ann@[127.0.0.256]", false},
    {"ann@[127.0.0.1", false},
    {"ann@[IPv6:nonsense]", false},
    {"ann@[tag:content]", false},
    {"ann@a.b@example.test", false},
    {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@example.test", true},
    {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@example.test", false},
    {"ann@aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.test", true},
    {"ann@aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.test", false},
};

START_TEST(test_addresses)
{
    const addr_case *c = &addr_cases[_i];
    ck_assert_msg(smtp_addr_valid(c->addr) == c->ok, "\"%s\": got %d, want %d", c->addr,
                  !c->ok, c->ok);
}
END_TEST

typedef struct {
    const char *arg;
    bool ok;
} helo_case;

static const helo_case helo_cases[] = {
    {"client.example.test", true}, {"[127.0.0.1]", true}, {"DESKTOP-AB_12", true},
    {"localhost", true},           {"", false},           {"two words", false},
    {"tab\there", false},          {"\xc3\xa4", false},
};

START_TEST(test_helo)
{
    const helo_case *c = &helo_cases[_i];
    ck_assert_msg(smtp_helo_valid(c->arg) == c->ok, "\"%s\": want %d", c->arg, c->ok);
}
END_TEST

/* ---- line reader ----
 * The caller loop as smtp_server runs it: append what arrived, take every complete line,
 * drop what was used. Lines are rendered as "text/FLAGS|" (L bare LF, N NUL, T too long;
 * a NUL byte shows as "\0"), followed by "+N" for the bytes left in the buffer. */

static void render_line(strbuf *o, const smtp_line *l)
{
    for (size_t i = 0; i < l->len; i++) {
        if (l->text[i] == '\0') strbuf_puts(o, "\\0");
        else strbuf_append(o, &l->text[i], 1);
    }
    if (l->flags) {
        strbuf_puts(o, "/");
        if (l->flags & SMTP_LINE_BARE_LF) strbuf_puts(o, "L");
        if (l->flags & SMTP_LINE_NUL) strbuf_puts(o, "N");
        if (l->flags & SMTP_LINE_TOO_LONG) strbuf_puts(o, "T");
        if (l->flags & SMTP_LINE_BARE_CR) strbuf_puts(o, "R");
    }
    strbuf_puts(o, "|");
}

/* Feeds input in chunks of `chunk` bytes (0: all at once). Returns the rendering (malloc'd)
 * and the largest buffer size seen in *peak. */
static char *run_reader(const char *input, size_t len, size_t max, size_t chunk, size_t *peak)
{
    smtp_linereader lr = {0};
    strbuf in, o;
    strbuf_init(&in);
    strbuf_init(&o);
    size_t off = 0;
    *peak = 0;
    if (chunk == 0) chunk = len ? len : 1;
    while (off < len) {
        size_t n = len - off < chunk ? len - off : chunk;
        strbuf_append(&in, input + off, n);
        off += n;
        if (in.len > *peak) *peak = in.len;
        size_t pos = 0, discard;
        smtp_line line;
        for (;;) {
            smtp_line_status st = smtp_line_next(&lr, in.buf + pos, in.len - pos, max, &line,
                                                 &discard);
            if (st == SMTP_LINE_MORE) {
                pos += discard;
                if (discard) continue;
                break;
            }
            render_line(&o, &line);
            pos += line.consumed;
        }
        strbuf_consume(&in, pos);
    }
    strbuf_printf(&o, "+%zu", in.len);
    strbuf_free(&in);
    return strbuf_steal(&o);
}

typedef struct {
    const char *name;
    const char *input;
    size_t len;              /* 0: strlen(input) */
    size_t max;
    const char *want;
} reader_case;

#define L40 "0123456789012345678901234567890123456789"

static const reader_case reader_cases[] = {
    {"one CRLF line", "EHLO a\r\n", 0, 512, "EHLO a|+0"},
    {"pipelined commands", "MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n", 0, 512,
     "MAIL FROM:<a@b.test>|RCPT TO:<c@d.test>|DATA|+0"},
    {"partial line stays buffered", "NOOP\r\nRCPT TO:<c", 0, 512, "NOOP|+10"},
    {"CR without LF is not an end", "NOOP\r", 0, 512, "+5"},
    {"bare LF", "NOOP\nQUIT\r\n", 0, 512, "NOOP/L|QUIT|+0"},
    {"empty lines", "\r\n\n", 0, 512, "|/L|+0"},
    {"CR inside a line is text, flagged as a bare CR", "a\rb\r\n", 0, 512, "a\rb/R|+0"},
    {"CR then LF in the next piece is a CRLF", "ab\r\ncd\r\n", 0, 512, "ab|cd|+0"},
    {"SMTP smuggling: CRLF.CR then text is no end", "x\r\n.\rMAIL\r\n", 0, 1000,
     "x|.\rMAIL/R|+0"},
    {"CR CR LF: the first CR is bare", "a\r\r\n", 0, 512, "a\r/R|+0"},
    {"NUL byte", "NO\0OP\r\nQUIT\r\n", 13, 512, "NO\\0OP/N|QUIT|+0"},
    {"SMTP smuggling: LF.LF is two bare-LF lines", "text\n.\nMAIL FROM:<x@y.test>\r\n", 0, 1000,
     "text/L|./L|MAIL FROM:<x@y.test>|+0"},
    {"SMTP smuggling: CRLF.LF", "text\r\n.\nRCPT\r\n", 0, 1000, "text|./L|RCPT|+0"},
    /* max 10: lines of up to 8 octets plus CRLF */
    {"exactly at the limit", "12345678\r\nx\r\n", 0, 10, "12345678|x|+0"},
    {"one over the limit", "123456789\r\nx\r\n", 0, 10, "/T|x|+0"},
    {"bare LF line of 9 octets is over (CR assumed)", "123456789\nx\r\n", 0, 10, "/LT|x|+0"},
    {"long line without end keeps nothing", L40 L40, 0, 10, "+0"},
    {"long line then its end", L40 L40 "\r\nNOOP\r\n", 0, 10, "/T|NOOP|+0"},
    {"long line ended by bare LF", L40 L40 "\nNOOP\r\n", 0, 10, "/LT|NOOP|+0"},
    {"two long lines", L40 "\r\n" L40 "\r\nok\r\n", 0, 10, "/T|/T|ok|+0"},
    {"NUL in a long line is only too long", L40 "\0" L40 "\r\n", 83, 10, "/T|+0"},
};

START_TEST(test_reader)
{
    const reader_case *c = &reader_cases[_i];
    size_t len = c->len ? c->len : strlen(c->input);
    /* The same lines whether the input arrives at once, byte by byte, or in 3-byte pieces. */
    static const size_t chunks[] = {0, 1, 3, 7};
    for (size_t k = 0; k < sizeof chunks / sizeof chunks[0]; k++) {
        size_t peak;
        char *got = run_reader(c->input, len, c->max, chunks[k], &peak);
        ck_assert_msg(strcmp(got, c->want) == 0, "%s (chunk %zu): got \"%s\", want \"%s\"",
                      c->name, chunks[k], got, c->want);
        free(got);
        /* Fed piecemeal, the buffer never holds more than one line's limit plus a chunk. */
        if (chunks[k] > 0)
            ck_assert_msg(peak <= c->max + chunks[k], "%s (chunk %zu): buffer grew to %zu",
                          c->name, chunks[k], peak);
    }
}
END_TEST

START_TEST(test_reader_crlf_split_across_reads)
{
    /* The CR of a long line's terminator arrives in one read, its LF in the next. */
    smtp_linereader lr = {0};
    smtp_line line;
    size_t discard;
    const char part1[] = "0123456789012\r";
    ck_assert_int_eq(smtp_line_next(&lr, part1, sizeof part1 - 1, 10, &line, &discard),
                     SMTP_LINE_MORE);
    ck_assert_uint_eq(discard, 10);
    ck_assert_int_eq(smtp_line_next(&lr, part1 + 10, 4, 10, &line, &discard), SMTP_LINE_MORE);
    ck_assert_uint_eq(discard, 4);
    ck_assert_int_eq(smtp_line_next(&lr, "\n", 1, 10, &line, &discard), SMTP_LINE_READY);
    ck_assert_uint_eq(line.flags, SMTP_LINE_TOO_LONG);    /* CRLF, not a bare LF */
    ck_assert_uint_eq(line.consumed, 1);
}
END_TEST

START_TEST(test_reader_empty_buffer)
{
    /* An empty strbuf has buf == NULL: nothing to read, nothing to drop. */
    smtp_linereader lr = {0};
    smtp_line line;
    size_t discard = 99;
    ck_assert_int_eq(smtp_line_next(&lr, NULL, 0, 512, &line, &discard), SMTP_LINE_MORE);
    ck_assert_uint_eq(discard, 0);
    lr.skipping = true;
    ck_assert_int_eq(smtp_line_next(&lr, NULL, 0, 512, &line, &discard), SMTP_LINE_MORE);
    ck_assert_uint_eq(discard, 0);
}
END_TEST

/* ---- replies ---- */

START_TEST(test_replies)
{
    strbuf o;
    strbuf_init(&o);
    smtp_reply_line(&o, "250 2.0.0 Ok");
    smtp_reply_printf(&o, "250 2.0.0 Ok %s", "0100019000000000-id-000000");
    static const char *const ehlo[] = {"mta.example.test", "PIPELINING", "SIZE 10485760",
                                       "8BITMIME"};
    smtp_reply_multi(&o, 250, ehlo, 4);
    static const char *const one[] = {"single"};
    smtp_reply_multi(&o, 214, one, 1);
    ck_assert_str_eq(o.buf, "250 2.0.0 Ok\r\n"
                            "250 2.0.0 Ok 0100019000000000-id-000000\r\n"
                            "250-mta.example.test\r\n250-PIPELINING\r\n250-SIZE 10485760\r\n"
                            "250 8BITMIME\r\n"
                            "214 single\r\n");
    strbuf_free(&o);

    char *s = smtp_sanitize("a\r\nb\x01\xc3z", 7, 100);
    ck_assert_str_eq(s, "a??b??z");
    free(s);
    s = smtp_sanitize("abcdef", 6, 3);
    ck_assert_str_eq(s, "abc");
    free(s);
}
END_TEST

static Suite *smtp_parse_suite(void)
{
    Suite *s = suite_create("smtp_parse");
    TCase *tc = tcase_create("core");
    tcase_add_loop_test(tc, test_verbs, 0, sizeof verb_cases / sizeof verb_cases[0]);
    tcase_add_loop_test(tc, test_paths, 0, sizeof path_cases / sizeof path_cases[0]);
    tcase_add_test(tc, test_path_too_long);
    tcase_add_loop_test(tc, test_addresses, 0, sizeof addr_cases / sizeof addr_cases[0]);
    tcase_add_loop_test(tc, test_helo, 0, sizeof helo_cases / sizeof helo_cases[0]);
    tcase_add_loop_test(tc, test_reader, 0, sizeof reader_cases / sizeof reader_cases[0]);
    tcase_add_test(tc, test_reader_crlf_split_across_reads);
    tcase_add_test(tc, test_reader_empty_buffer);
    tcase_add_test(tc, test_replies);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(smtp_parse_suite);
