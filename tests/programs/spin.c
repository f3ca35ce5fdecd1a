/* Spins on the CPU inside the function spin_here for SECONDS seconds, then
 * prints "spun" and stays alive (so its stacks can still be named) until its
 * stdin closes. Waits for a line on stdin before spinning. Built with frame
 * pointers, so user stacks can be walked. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) unsigned long spin_here(double seconds) {
    volatile unsigned long work = 0;
    double end = now() + seconds;
    while (now() < end)
        for (int i = 0; i < 10000000; i++)  /* the clock is read rarely */
            work += i;
    return work;
}

int main(int argc, char **argv) {
    char line[16];
    if (argc != 2 || !fgets(line, sizeof line, stdin))
        return 2;
    spin_here(atof(argv[1]));
    printf("spun\n");
    fflush(stdout);
    while (fgets(line, sizeof line, stdin))
        ;
    return 0;
}
