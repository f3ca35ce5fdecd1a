/* Fires node:http__server__request once per path given on the command line,
 * with the path as argument 6 like Node.js, after a line arrives on stdin
 * (so a tracer can attach to its pid first). */
#include <stdio.h>
#include <sys/sdt.h>

static const char *volatile method = "GET";
static const char *volatile address = "127.0.0.1";
static volatile char touched;

int main(int argc, char **argv) {
    char go[16];
    if (!fgets(go, sizeof(go), stdin))
        return 1;
    /* a BPF read of a page the process never touched fails: touch the strings */
    const char *m = method, *a = address;
    touched = m[0] + a[0];
    for (int i = 1; i < argc; i++) {
        /* Node.js passes (req, socket, remote address, port, method, url, fd) */
        DTRACE_PROBE7(node, http__server__request, (void *)0, (void *)0, a, 8080, m, argv[i], 3);
    }
    return 0;
}
