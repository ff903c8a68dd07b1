/* tap.h: what the embedding hosts share to print TAP: diagnostics lines.
 * Each host keeps its own report(), as each counts and names differently. */
#ifndef FSW_EMBED_TAP_H
#define FSW_EMBED_TAP_H

#include <stdio.h>
#include <string.h>

/* Print `text` as TAP diagnostics: each line behind "# ". */
static void diag(const char *text) {
  while (*text) {
    size_t n = strcspn(text, "\n");
    printf("# %.*s\n", (int)n, text);
    text += n + (text[n] == '\n');
  }
}

#endif
