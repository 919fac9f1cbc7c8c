/* template.h — SES email templates (pure, fuzzed): rendering a template's Subject, Text
 * and Html with TemplateData as SES's Handlebars subset does: {{name}} and {{a.b.c}}
 * (values printed as given: strings verbatim, numbers and booleans as JSON writes them),
 * {{#if x}}...{{else}}...{{/if}}, {{#unless x}}...{{/unless}}, {{#each list}}...{{this}} /
 * {{field}}...{{/each}}, no HTML escaping (as SES). A variable absent from the data is an
 * error naming it, as SES's TestRenderEmailTemplate reports. Bounded: nesting depth 16,
 * output at most max bytes. */
#ifndef KILN_TEMPLATE_H
#define KILN_TEMPLATE_H

#include <stddef.h>

struct json_t;

/* Renders tmpl (NUL-terminated) with data (a JSON object). The malloc'd result, or NULL
 * with *err (malloc'd): "Attribute 'name' is not present in the rendering data.",
 * "Template syntax error at offset 14: unclosed {{#if}}", "Rendered template is larger
 * than N bytes". */
char *template_render(const char *tmpl, const struct json_t *data, size_t max, char **err);

/* Checks a template's syntax without data (CreateEmailTemplate): 0, or -1 with *err. */
int template_check(const char *tmpl, char **err);

#endif
