/* test_template.c — SES email templates (api/template.h): what a template renders to with
 * given TemplateData, as SES (Handlebars) renders it: {{name}} with blanks, triple braces
 * and '&' alike and never HTML-escaped; nested paths and array indexes; strings, integers,
 * reals, booleans and null printed; {{#if}}/{{else}}/{{#unless}}/{{#each}} with this,
 * @index, @key, @first, @last, an {{else}} for an empty list and chained {{else if}};
 * names looked up from the innermost item outward; comments and "\{{". Errors as a user
 * sees them: SES's missing-attribute text exactly, syntax errors with the offset of the
 * tag (unclosed and mismatched blocks, stray {{else}} and {{/x}}, partials, helpers,
 * @index outside {{#each}}, 16 levels of nesting and not 17), objects printed, the output
 * cap at its exact edge, and the step budget stopping nested loops that print little. */
#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/template.h"
#include "base/util.h"
#include "tests/unit/testlib.h"

static json_t *data_of(const char *text)
{
    json_error_t e;
    json_t *d = json_loads(text, 0, &e);
    ck_assert_msg(d != NULL, "test data: %s", e.text);
    return d;
}

/* Renders tmpl with the JSON text data and compares. */
static void render_eq(const char *tmpl, const char *data, const char *want)
{
    json_t *d = data_of(data);
    char *err = NULL;
    char *out = template_render(tmpl, d, 1 << 20, &err);
    ck_assert_msg(out != NULL, "%s: %s", tmpl, err ? err : "?");
    ck_assert_msg(strcmp(out, want) == 0, "%s: got [%s], want [%s]", tmpl, out, want);
    ck_assert_int_eq(template_check(tmpl, &err), 0);
    free(out);
    json_decref(d);
}

static void render_err(const char *tmpl, const char *data, size_t max, const char *want)
{
    json_t *d = data_of(data);
    char *err = NULL;
    char *out = template_render(tmpl, d, max, &err);
    ck_assert_msg(out == NULL, "%s rendered [%s]", tmpl, out);
    ck_assert_msg(strcmp(err, want) == 0, "%s: [%s], want [%s]", tmpl, err, want);
    free(err);
    json_decref(d);
}

static void syntax_err(const char *tmpl, const char *want)
{
    char *err = NULL;
    ck_assert_int_eq(template_check(tmpl, &err), -1);
    ck_assert_msg(strcmp(err, want) == 0, "%s: [%s], want [%s]", tmpl, err, want);
    free(err);
    render_err(tmpl, "{}", 1 << 20, want);
}

START_TEST(test_variables)
{
    render_eq("Hello {{name}}!", "{\"name\": \"Ana\"}", "Hello Ana!");
    render_eq("{{ name }}|{{{name}}}|{{{ name }}}|{{& name}}|{{\tname\n}}",
              "{\"name\": \"<b>A&B</b>\"}", "<b>A&B</b>|<b>A&B</b>|<b>A&B</b>|<b>A&B</b>|<b>A&B</b>");
    render_eq("{{contact.firstName}} in {{contact.address.city}}",
              "{\"contact\": {\"firstName\": \"Anaya\", \"address\": {\"city\": \"Bengaluru\"}}}",
              "Anaya in Bengaluru");
    render_eq("{{items.1}} {{items.0.n}}", "{\"items\": [{\"n\": \"first\"}, \"second\"]}",
              "second first");
    render_eq("{{a_b-c}}{{X9}}", "{\"a_b-c\": \"1\", \"X9\": \"2\"}", "12");
    render_eq("no tags at all } { }}", "{}", "no tags at all } { }}");
    render_eq("", "{}", "");
    render_eq("caf\u00e9 {{v}} \U0001F389", "{\"v\": \"\u00fc\"}", "caf\u00e9 \u00fc \U0001F389");
}
END_TEST

START_TEST(test_value_printing)
{
    render_eq("{{i}} {{n}} {{t}} {{f}} [{{z}}] {{s}}",
              "{\"i\": 42, \"n\": -7, \"t\": true, \"f\": false, \"z\": null, \"s\": \"\"}",
              "42 -7 true false [] ");
    render_eq("{{a}} {{b}} {{c}} {{d}} {{e}}",
              "{\"a\": 1.5, \"b\": 0.1, \"c\": 3.0, \"d\": 1e300, \"e\": -0.25}",
              "1.5 0.1 3.0 1e+300 -0.25");
    render_eq("{{big}}", "{\"big\": 9007199254740993}", "9007199254740993");
    render_err("{{o}}", "{\"o\": {\"a\": 1}}", 1000,
               "Attribute 'o' is an object, which cannot be printed.");
    render_err("{{l}}", "{\"l\": [1]}", 1000, "Attribute 'l' is an array, which cannot be printed.");
}
END_TEST

START_TEST(test_missing_attribute)
{
    render_err("Hi {{name}}", "{}", 1000, "Attribute 'name' is not present in the rendering data.");
    render_err("{{contact.lastName}}", "{\"contact\": {\"firstName\": \"A\"}}", 1000,
               "Attribute 'contact.lastName' is not present in the rendering data.");
    render_err("{{a.b}}", "{\"a\": \"string\"}", 1000,
               "Attribute 'a.b' is not present in the rendering data.");
    render_err("{{l.5}}", "{\"l\": [1, 2]}", 1000,
               "Attribute 'l.5' is not present in the rendering data.");
    /* a missing name is false in a condition and empty in a loop, not an error */
    render_eq("{{#if gone}}yes{{else}}no{{/if}}{{#each gone}}x{{/each}}", "{}", "no");
}
END_TEST

START_TEST(test_conditions)
{
    const char *t = "{{#if v}}T{{else}}F{{/if}}";
    const char *falsy[] = {"false", "null", "0", "0.0", "\"\"", "[]"};
    const char *truthy[] = {"true", "1", "-1", "0.5", "\"0\"", "\" \"", "[0]", "{}"};
    for (size_t i = 0; i < sizeof falsy / sizeof falsy[0]; i++) {
        char *d = util_asprintf("{\"v\": %s}", falsy[i]);
        render_eq(t, d, "F");
        render_eq("{{#unless v}}U{{/unless}}", d, "U");
        free(d);
    }
    for (size_t i = 0; i < sizeof truthy / sizeof truthy[0]; i++) {
        char *d = util_asprintf("{\"v\": %s}", truthy[i]);
        render_eq(t, d, "T");
        render_eq("{{#unless v}}U{{else}}N{{/unless}}", d, "N");
        free(d);
    }
    render_eq("{{#if a}}A{{else if b}}B{{else if c}}C{{else}}D{{/if}}",
              "{\"a\": false, \"b\": 0, \"c\": \"yes\"}", "C");
    render_eq("{{#if a}}A{{else if b}}B{{/if}}!", "{}", "!");
    render_eq("{{#if a}}{{#if b}}ab{{else}}a{{/if}}{{/if}}", "{\"a\": 1, \"b\": 0}", "a");
    render_eq("{{#if u.vip}}Dear VIP {{u.name}}{{/if}}",
              "{\"u\": {\"vip\": true, \"name\": \"Bo\"}}", "Dear VIP Bo");
}
END_TEST

START_TEST(test_each)
{
    render_eq("{{#each subscription}}<li>{{interest}}</li>{{/each}}",
              "{\"subscription\": [{\"interest\": \"Sports\"}, {\"interest\": \"Travel\"}]}",
              "<li>Sports</li><li>Travel</li>");
    render_eq("{{#each l}}{{@index}}={{this}}{{#if @first}}(first){{/if}}"
              "{{#if @last}}(last){{/if}};{{/each}}",
              "{\"l\": [\"a\", \"b\", \"c\"]}", "0=a(first);1=b;2=c(last);");
    render_eq("{{#each o}}{{@key}}:{{this}} {{/each}}", "{\"o\": {\"x\": 1, \"y\": \"two\"}}",
              "x:1 y:two ");
    render_eq("{{#each l}}x{{else}}empty{{/each}}", "{\"l\": []}", "empty");
    render_eq("{{#each l}}x{{else}}none{{/each}}", "{\"l\": \"not a list\"}", "none");
    /* outer names from inside an item; "this" only the item */
    render_eq("{{#each items}}{{name}} for {{customer}}, {{/each}}",
              "{\"customer\": \"Ann\", \"items\": [{\"name\": \"pen\"}, {\"name\": \"ink\"}]}",
              "pen for Ann, ink for Ann, ");
    render_err("{{#each items}}{{this.customer}}{{/each}}",
               "{\"customer\": \"Ann\", \"items\": [{\"name\": \"pen\"}]}", 1000,
               "Attribute 'this.customer' is not present in the rendering data.");
    /* nested loops: @index is the inner one's */
    render_eq("{{#each rows}}{{#each this}}{{@index}}{{this}} {{/each}}|{{/each}}",
              "{\"rows\": [[\"a\", \"b\"], [\"c\"]]}", "0a 1b |0c |");
    render_eq("{{#each rows}}{{#each cells}}{{v}}{{/each}}{{/each}}",
              "{\"rows\": [{\"cells\": [{\"v\": 1}, {\"v\": 2}]}, {\"cells\": []}]}", "12");
}
END_TEST

START_TEST(test_comments_and_escapes)
{
    render_eq("a{{! a comment }}b{{!-- has }} inside --}}c", "{}", "abc");
    render_eq("literal \\{{name}} and {{name}}", "{\"name\": \"N\"}", "literal {{name}} and N");
}
END_TEST

START_TEST(test_syntax_errors)
{
    syntax_err("Hi {{#if x}}open", "Template syntax error at offset 3: unclosed {{#if}}");
    syntax_err("{{#each l}}{{/if}}",
               "Template syntax error at offset 11: {{/if}} does not close the {{#each}} at offset 0");
    syntax_err("x{{/if}}", "Template syntax error at offset 1: {{/if}} closes no block");
    syntax_err("{{else}}", "Template syntax error at offset 0: {{else}} outside a block");
    syntax_err("{{#if a}}{{else}}{{else}}{{/if}}",
               "Template syntax error at offset 17: a second {{else}} in the {{#if}} at offset 0");
    syntax_err("ab {{name", "Template syntax error at offset 3: unclosed {{");
    syntax_err("{{{name}}", "Template syntax error at offset 0: unclosed {{{");
    syntax_err("{{! never closed", "Template syntax error at offset 0: unclosed comment");
    syntax_err("{{}}", "Template syntax error at offset 0: empty {{}}");
    syntax_err("{{> footer}}", "Template syntax error at offset 0: partials are not supported");
    syntax_err("{{#* inline \"x\"}}{{/inline}}",
               "Template syntax error at offset 0: inline partials are not supported");
    syntax_err("{{#with a}}{{/with}}",
               "Template syntax error at offset 0: unknown block helper 'with'");
    syntax_err("{{upper name}}",
               "Template syntax error at offset 0: helpers are not supported ('upper name')");
    syntax_err("{{#if}}{{/if}}", "Template syntax error at offset 0: {{#if}} needs an attribute");
    syntax_err("{{#if a b}}{{/if}}", "Template syntax error at offset 0: {{#if}} takes one attribute");
    syntax_err("{{@index}}", "Template syntax error at offset 0: @index outside {{#each}}");
    syntax_err("{{#each l}}{{else}}{{/each}}{{@first}}",
               "Template syntax error at offset 28: @first outside {{#each}}");
    syntax_err("{{../name}}",
               "Template syntax error at offset 0: parent paths ('../name') are not supported");
    syntax_err("{{a..b}}", "Template syntax error at offset 0: 'a..b' is not an attribute name");
    syntax_err("{{a b=1}}", "Template syntax error at offset 0: helpers are not supported ('a b=1')");
    syntax_err("{{na$me}}", "Template syntax error at offset 0: 'na$me' is not an attribute name");
    syntax_err("{{#if a}}{{else if b}}x", "Template syntax error at offset 0: unclosed {{#if}}");
}
END_TEST

START_TEST(test_depth_limit)
{
    strbuf t;
    strbuf_init(&t);
    for (int i = 0; i < 16; i++) strbuf_puts(&t, "{{#if a}}");
    strbuf_puts(&t, "deep");
    for (int i = 0; i < 16; i++) strbuf_puts(&t, "{{/if}}");
    render_eq(t.buf, "{\"a\": true}", "deep");
    strbuf_reset(&t);
    for (int i = 0; i < 17; i++) strbuf_puts(&t, "{{#if a}}");
    for (int i = 0; i < 17; i++) strbuf_puts(&t, "{{/if}}");
    syntax_err(t.buf, "Template syntax error at offset 144: blocks nested more than 16 deep");
    strbuf_free(&t);
}
END_TEST

START_TEST(test_output_cap)
{
    json_t *d = data_of("{\"v\": \"0123456789\"}");
    char *err = NULL;
    char *out = template_render("ab{{v}}", d, 12, &err);
    ck_assert_str_eq(out, "ab0123456789");
    free(out);
    json_decref(d);
    render_err("ab{{v}}", "{\"v\": \"0123456789\"}", 11, "Rendered template is larger than 11 bytes");
    render_err("{{#each l}}{{#each l}}{{#each l}}xxxxxxxxxx{{/each}}{{/each}}{{/each}}",
               "{\"l\": [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20]}", 50000,
               "Rendered template is larger than 50000 bytes");

    /* nested loops that print nothing still stop: 200^4 iterations exceed the step budget */
    strbuf list;
    strbuf_init(&list);
    strbuf_puts(&list, "{\"l\": [0");
    for (int i = 1; i < 200; i++) strbuf_puts(&list, ",0");
    strbuf_puts(&list, "]}");
    render_err("{{#each l}}{{#each l}}{{#each l}}{{#each l}}{{/each}}{{/each}}{{/each}}{{/each}}",
               list.buf, 1000, "Rendering the template takes more than 1001000 steps");
    strbuf_free(&list);
}
END_TEST

static Suite *template_suite(void)
{
    Suite *s = suite_create("template");
    TCase *tc = tcase_create("render");
    tcase_add_test(tc, test_variables);
    tcase_add_test(tc, test_value_printing);
    tcase_add_test(tc, test_missing_attribute);
    tcase_add_test(tc, test_conditions);
    tcase_add_test(tc, test_each);
    tcase_add_test(tc, test_comments_and_escapes);
    suite_add_tcase(s, tc);
    tc = tcase_create("limits");
    tcase_add_test(tc, test_syntax_errors);
    tcase_add_test(tc, test_depth_limit);
    tcase_add_test(tc, test_output_cap);
    suite_add_tcase(s, tc);
    return s;
}

TESTLIB_SUITES(template_suite);
