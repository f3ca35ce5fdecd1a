/* Writes to /dev/null COUNT times with sizes drawn from a seeded sequence
 * (a 64-bit LCG, so Python can compute the same sizes): size = (state >>
 * 33) % MAX + 1 bytes. Waits for a line on stdin first, then prints the
 * sum of the sizes it wrote. Usage: sized_writes SEED COUNT MAX */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static char buffer[1 << 20];

int main(int argc, char **argv) {
    if (argc != 4)
        return 2;
    unsigned long long state = strtoull(argv[1], NULL, 10);
    long count = strtol(argv[2], NULL, 10);
    unsigned long long most = strtoull(argv[3], NULL, 10);
    if (most < 1 || most > sizeof(buffer))
        return 2;
    int fd = open("/dev/null", O_WRONLY);
    if (fd < 0)
        return 3;
    char go[16];
    if (!fgets(go, sizeof(go), stdin))
        return 1;
    unsigned long long total = 0;
    for (long i = 0; i < count; i++) {
        state = state * 6364136223846793005ULL + 1442695040888963407ULL;
        size_t size = (state >> 33) % most + 1;
        if (write(fd, buffer, size) != (ssize_t)size)
            return 4;
        total += size;
    }
    printf("%llu\n", total);
    return 0;
}
