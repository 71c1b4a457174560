/*
 * rsswait: times how long a process tree takes to reach a resident size.
 *
 *   rsswait BYTES PID -- COMMAND...   run COMMAND, then watch PID
 *   rsswait BYTES 0 -- COMMAND...     run COMMAND and watch it
 *
 * The clock starts just before COMMAND is started.  The process tree is
 * polled every 200 microseconds, and the largest resident size of any one
 * process in it counts (stress-ng holds its memory in a grandchild).  Prints
 * the seconds taken and exits 0, or exits 1 after 60 s.  A watched COMMAND
 * is sent SIGTERM at the end.
 */
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static unsigned long long rss_of(pid_t pid)
{
    char path[64];
    unsigned long long size = 0, resident = 0;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/statm", (int)pid);
    f = fopen(path, "r");
    if (!f)
        return 0;
    if (fscanf(f, "%llu %llu", &size, &resident) != 2)
        resident = 0;
    fclose(f);
    return resident * (unsigned long long)sysconf(_SC_PAGESIZE);
}

/* Returns the largest RSS in the tree under pid, reading each task's
 * children list. */
static unsigned long long max_rss(pid_t pid, int depth)
{
    char path[320];
    unsigned long long best = rss_of(pid), child_rss;
    DIR *tasks;
    struct dirent *task;

    if (depth > 4)
        return best;
    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    tasks = opendir(path);
    if (!tasks)
        return best;
    while ((task = readdir(tasks))) {
        FILE *f;
        int child;

        if (task->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "/proc/%d/task/%s/children", (int)pid,
                 task->d_name);
        f = fopen(path, "r");
        if (!f)
            continue;
        while (fscanf(f, "%d", &child) == 1) {
            child_rss = max_rss(child, depth + 1);
            if (child_rss > best)
                best = child_rss;
        }
        fclose(f);
    }
    closedir(tasks);
    return best;
}

int main(int argc, char **argv)
{
    unsigned long long bytes;
    pid_t watched, child;
    double start;
    struct timespec pause_ts = {0, 200000};

    if (argc < 5 || strcmp(argv[3], "--") != 0) {
        fprintf(stderr, "usage: rsswait BYTES PID|0 -- COMMAND...\n");
        return 2;
    }
    bytes = strtoull(argv[1], NULL, 10);
    watched = (pid_t)atoi(argv[2]);

    start = now();
    child = fork();
    if (child == 0) {
        execvp(argv[4], &argv[4]);
        perror("rsswait: exec");
        _exit(127);
    }
    if (watched == 0)
        watched = child;

    while (max_rss(watched, 0) < bytes) {
        if (now() - start > 60) {
            fprintf(stderr, "rsswait: no %llu bytes after 60 s\n", bytes);
            kill(child, SIGTERM);
            return 1;
        }
        waitpid(child, NULL, WNOHANG);
        nanosleep(&pause_ts, NULL);
    }
    printf("%.4f\n", now() - start);
    if (watched == child)
        kill(child, SIGTERM);
    waitpid(child, NULL, 0);
    return 0;
}
