/* Where a command's tokenizer comes from: a tokenizer.json (or a directory holding one), or the
 * tokenizer.json a .sluice file embeds. */
#include "cli/cli.h"
#include "format/format.h"
#include "text/text.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static bool is_sluice_file(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode))
        return false;
    FILE *f = fopen(path, "rb");
    char magic[6] = {0};
    bool yes = f && fread(magic, 1, 6, f) == 6 && !memcmp(magic, "SLUICE", 6);
    if (f)
        fclose(f);
    return yes;
}

int sl_cli_open_tokenizer(const char *path, sl_tokenizer **out, sl_error *e)
{
    if (!is_sluice_file(path))
        return sl_tokenizer_load(path, out, e);
    sl_sluice *f;
    int rc = sl_sluice_open(path, &f, e);
    if (rc)
        return rc;
    size_t len;
    const char *json = sl_sluice_tokenizer(f, &len);
    char origin[4200];
    snprintf(origin, sizeof origin, "%s: embedded tokenizer", path);
    rc = json ? sl_tokenizer_load_json(json, len, NULL, 0, origin, out, e)
              : sl_errorf(e, SL_E_MISSING, "%s: no tokenizer embedded (give a tokenizer.json)", path);
    sl_sluice_close(f);
    return rc;
}
