/* msgtags.h — message tags written in a message's X-SES-MESSAGE-TAGS header fields, as SES
 * reads them from SMTP and SendRawEmail mail (pure, on parsed headers).
 *
 * The value is "name1=value1, name2=value2"; several such fields add up. Names and values
 * follow the EmailTags rules (events_tag_check: letters, digits, '_', '-', '.', '@', at most
 * 256 characters, names not starting with "ses:"); at most MSGTAGS_MAX tags in all. A field
 * that breaks a rule is refused whole, with a message naming the tag and the rule. */
#ifndef KILN_MSGTAGS_H
#define KILN_MSGTAGS_H

#include <stddef.h>

#include "mta/message.h"

#define MSGTAGS_HEADER "X-SES-MESSAGE-TAGS"
#define MSGTAGS_MAX 50          /* SES's limit on a message's tags (EmailTags too) */

typedef struct msgtags {
    char **names;
    char **values;
    size_t n;
} msgtags;

/* Collects the tags of every X-SES-MESSAGE-TAGS field of hs into *out (empty if none).
 * Returns 0, or -1 with *err a malloc'd message such as
 * "X-SES-MESSAGE-TAGS: tag \"a b\" has no '='" and *out empty. */
int msgtags_from_headers(const msg_headers *hs, msgtags *out, char **err);
void msgtags_free(msgtags *t);

#endif
