/* Calls strlen() on each argument a number of times: "3:text" calls it three
 * times on "text". The calls go through a volatile function pointer, so the
 * compiler cannot fold or inline them: they reach libc's implementation, the
 * one its IFUNC resolver picked. Waits for a line on stdin first. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    size_t (*volatile call_strlen)(const char *) = strlen;
    size_t total = 0;
    char go[16];
    if (!fgets(go, sizeof(go), stdin))
        return 1;
    for (int i = 1; i < argc; i++) {
        char *text = strchr(argv[i], ':');
        if (!text)
            return 2;
        long times = strtol(argv[i], NULL, 10);
        for (long n = 0; n < times; n++)
            total += call_strlen(text + 1);
    }
    printf("%zu\n", total);
    return 0;
}
