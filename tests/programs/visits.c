/* Calls visit(path, n) once per argument, n counting from 1, after a line
 * arrives on stdin (so a tracer can attach to its pid first). visit() is not
 * inlined, so a uprobe on it sees each call with its arguments. */
#include <stdio.h>
#include <string.h>

static volatile size_t seen;

__attribute__((noinline)) void visit(const char *path, unsigned long n) {
    seen += strlen(path) + n;
}

int main(int argc, char **argv) {
    char go[16];
    if (!fgets(go, sizeof(go), stdin))
        return 1;
    for (int i = 1; i < argc; i++) {
        seen += strlen(argv[i]); /* touch the string's page before the probe reads it */
        visit(argv[i], (unsigned long)i);
    }
    printf("%zu\n", seen);
    return 0;
}
