/* Fires node:http__server__request once per path given on the command line,
 * with the path as argument 6 like Node.js, after a line arrives on stdin
 * (so a tracer can attach to its pid first). */
#include <stdio.h>
#include <sys/sdt.h>

int main(int argc, char **argv) {
    char go[16];
    if (!fgets(go, sizeof(go), stdin))
        return 1;
    for (int i = 1; i < argc; i++) {
        /* Node.js passes (req, socket, remote address, port, method, url, fd) */
        DTRACE_PROBE7(node, http__server__request, (void *)0, (void *)0, "127.0.0.1",
                      8080, "GET", argv[i], 3);
    }
    return 0;
}
