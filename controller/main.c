/*
 * memstress-controller: watches MemoryStressTest resources and runs their
 * worker pods.
 *
 * NEEDSWORK: only the command line exists so far.  The reconcile loop (list
 * and watch MemoryStressTests and pods, create worker pods, aggregate the
 * workers' status) is not written yet, so the binary exits after parsing
 * its options.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

static void usage(FILE *out)
{
    fprintf(out, "Usage: memstress-controller [OPTIONS]\n"
                 "\n"
                 "Runs the worker pods of MemoryStressTest resources.\n"
                 "\n"
                 "Options:\n"
                 "  --help      print this help and exit\n"
                 "  --version   print the version and exit\n");
}

int main(int argc, char **argv)
{
    static const struct option long_options[] = {
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    int opt;

    while ((opt = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
        switch (opt) {
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("memstress-controller %s\n", MEMSTRESS_VERSION);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    fprintf(stderr, "memstress-controller: the reconcile loop is not "
                    "implemented yet\n");
    return 1;
}
