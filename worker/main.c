/*
 * memstress-worker: fills memory with the tree stress engine and serves the
 * HTTP API that starts, stops and reports tests.
 *
 * The listening socket is opened here rather than by libmicrohttpd so that a
 * bind failure is reported with its errno and address, and so that port 0
 * works: the chosen port is logged.  SIGTERM and SIGINT are taken with
 * sigwait() in the main thread, which then stops the test and the server.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <malloc.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kube/klog.h"
#include "worker/api.h"
#include "worker/cluster.h"
#include "worker/engine.h"
#include "worker/trim.h"

/* How often an idle worker trims library pages; cheap (one smaps read). */
#define IDLE_TRIM_SECONDS 5

struct options {
    const char *listen;
    const char *cgroup_root;
    size_t log_capacity;
    unsigned threads;
    bool huge_pages;
    /* Cluster mode: the MemoryStressTest as "namespace/name", or NULL. */
    const char *test;
    const char *kubeconfig;
    const char *pod;
    const char *node;
    const char *pod_ip;
};

static void usage(FILE *out)
{
    fprintf(
        out,
        "Usage: memstress-worker [OPTIONS]\n"
        "\n"
        "Fills memory with a binary search tree and serves an HTTP API\n"
        "to start, stop and observe memory stress tests.\n"
        "\n"
        "Options:\n"
        "  --listen ADDR:PORT    address to serve on (default "
        "0.0.0.0:8080;\n"
        "                        [::1]:8080 for IPv6, port 0 picks one)\n"
        "  --log-format FORMAT   text (default) or json\n"
        "  -v, --v LEVEL         log verbosity, 0-5 (default 2)\n"
        "  --cgroup-root DIR     cgroup file system root (default "
        "/sys/fs/cgroup)\n"
        "  --log-capacity N      test log entries kept (default 1000)\n"
        "  --threads N           HTTP request threads (default 4)\n"
        "  --huge-pages on|off   back the tree with transparent huge\n"
        "                        pages where the kernel allows (default "
        "on)\n"
        "\n"
        "In a pod, started by memstress-controller:\n"
        "  --test NAMESPACE/NAME run the test of this MemoryStressTest and\n"
        "                        write this worker's status entry\n"
        "  --pod-name NAME       status entry key (default $POD_NAME)\n"
        "  --node-name NAME      reported node (default $NODE_NAME)\n"
        "  --pod-ip IP           reported pod IP (default $POD_IP)\n"
        "  --kubeconfig PATH     API credentials (default $KUBECONFIG,\n"
        "                        then the in-cluster service account)\n"
        "\n"
        "  --help                print this help and exit\n"
        "  --version             print the version and exit\n");
}

static int parse_size(const char *text, size_t min, size_t max, size_t *out)
{
    char *end;
    unsigned long long value;

    errno = 0;
    value = strtoull(text, &end, 10);
    if (errno || *end || end == text || value < min || value > max)
        return -EINVAL;
    *out = value;
    return 0;
}

static int parse_options(int argc, char **argv, struct options *o)
{
    static const struct option long_options[] = {
        {"listen", required_argument, NULL, 'l'},
        {"log-format", required_argument, NULL, 'f'},
        {"v", required_argument, NULL, 'v'},
        {"cgroup-root", required_argument, NULL, 'c'},
        {"log-capacity", required_argument, NULL, 'n'},
        {"threads", required_argument, NULL, 't'},
        {"huge-pages", required_argument, NULL, 'H'},
        {"test", required_argument, NULL, 'T'},
        {"kubeconfig", required_argument, NULL, 'k'},
        {"pod-name", required_argument, NULL, 'p'},
        {"node-name", required_argument, NULL, 'N'},
        {"pod-ip", required_argument, NULL, 'i'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    enum klog_format format;
    size_t value;
    int opt;

    while ((opt = getopt_long(argc, argv, "v:", long_options, NULL)) != -1) {
        switch (opt) {
        case 'l':
            o->listen = optarg;
            break;
        case 'f':
            if (klog_parse_format(optarg, &format) < 0) {
                fprintf(stderr,
                        "memstress-worker: invalid --log-format "
                        "\"%s\": use text or json\n",
                        optarg);
                return 2;
            }
            klog_set_format(format);
            break;
        case 'v':
            if (parse_size(optarg, 0, 10, &value) < 0) {
                fprintf(stderr,
                        "memstress-worker: invalid -v \"%s\": use 0-10\n",
                        optarg);
                return 2;
            }
            klog_set_verbosity((int)value);
            break;
        case 'c':
            o->cgroup_root = optarg;
            break;
        case 'n':
            if (parse_size(optarg, 10, 1000000, &o->log_capacity) < 0) {
                fprintf(stderr,
                        "memstress-worker: invalid --log-capacity \"%s\": "
                        "use 10-1000000\n",
                        optarg);
                return 2;
            }
            break;
        case 't':
            if (parse_size(optarg, 1, 64, &value) < 0) {
                fprintf(stderr,
                        "memstress-worker: invalid --threads \"%s\": use "
                        "1-64\n",
                        optarg);
                return 2;
            }
            o->threads = (unsigned)value;
            break;
        case 'H':
            if (strcmp(optarg, "on") != 0 && strcmp(optarg, "off") != 0) {
                fprintf(stderr,
                        "memstress-worker: invalid --huge-pages \"%s\": use "
                        "on or off\n",
                        optarg);
                return 2;
            }
            o->huge_pages = strcmp(optarg, "on") == 0;
            break;
        case 'T':
            o->test = optarg;
            break;
        case 'k':
            o->kubeconfig = optarg;
            break;
        case 'p':
            o->pod = optarg;
            break;
        case 'N':
            o->node = optarg;
            break;
        case 'i':
            o->pod_ip = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("memstress-worker %s\n", MEMSTRESS_VERSION);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (o->test && (!strchr(o->test, '/') || !o->pod || !*o->pod)) {
        fprintf(stderr, "memstress-worker: --test needs NAMESPACE/NAME and a "
                        "pod name (--pod-name or $POD_NAME)\n");
        return 2;
    }
    if (optind < argc) {
        fprintf(stderr, "memstress-worker: unexpected argument \"%s\"\n",
                argv[optind]);
        usage(stderr);
        return 2;
    }
    return -1;
}

/* Returns true for a decimal port number from 0 to 65535. */
static bool valid_port(const char *text)
{
    size_t len = strspn(text, "0123456789");

    return len > 0 && len <= 5 && text[len] == '\0' && atoi(text) <= 65535;
}

/* Splits "ADDR:PORT", "[V6]:PORT" or ":PORT" into host and port. */
static int split_listen(const char *listen, char *host, size_t host_size,
                        char *port, size_t port_size)
{
    const char *colon = strrchr(listen, ':');
    size_t host_len;

    if (!colon || colon[1] == '\0')
        return -EINVAL;
    host_len = (size_t)(colon - listen);
    if (listen[0] == '[') {
        if (host_len < 2 || listen[host_len - 1] != ']')
            return -EINVAL;
        listen++;
        host_len -= 2;
    }
    if (host_len >= host_size || strlen(colon + 1) >= port_size ||
        !valid_port(colon + 1))
        return -EINVAL;
    memcpy(host, listen, host_len);
    host[host_len] = '\0';
    snprintf(port, port_size, "%s", colon + 1);
    return 0;
}

/* Opens a non-blocking listening socket; returns the fd or -1 (logged). */
static int open_listener(const char *listen_addr)
{
    char host[256], port[16], where[300];
    struct addrinfo hints = {0}, *res = NULL;
    struct sockaddr_storage bound;
    socklen_t bound_len = sizeof(bound);
    int fd = -1, one = 1, ret;

    if (split_listen(listen_addr, host, sizeof(host), port, sizeof(port)) < 0) {
        KLOG_ERROR("Invalid listen address",
                   "expected ADDR:PORT with a numeric address and a port "
                   "from 0 to 65535, such as 127.0.0.1:8080",
                   "listen", listen_addr, NULL);
        return -1;
    }
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV;
    ret = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
    if (ret != 0) {
        KLOG_ERROR("Invalid listen address", gai_strerror(ret), "listen",
                   listen_addr, NULL);
        return -1;
    }

    fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 512) < 0) {
        KLOG_ERROR("Failed to listen", strerror(errno), "listen", listen_addr,
                   NULL);
        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);

    getsockname(fd, (struct sockaddr *)&bound, &bound_len);
    getnameinfo((struct sockaddr *)&bound, bound_len, host, sizeof(host), port,
                sizeof(port), NI_NUMERICHOST | NI_NUMERICSERV);
    snprintf(where, sizeof(where), strchr(host, ':') ? "[%s]:%s" : "%s:%s",
             host, port);
    KLOG_INFO(0, "Started HTTP server", "address", where, "version",
              MEMSTRESS_VERSION, NULL);
    return fd;
}

/*
 * Waits for SIGTERM or SIGINT and returns it.  Every IDLE_TRIM_SECONDS
 * without a running test it also gives back the library pages that
 * requests faulted in again, so an idle worker stays at its idle size.
 */
static int wait_for_signal(const sigset_t *signals, struct engine *engine)
{
    const struct timespec period = {IDLE_TRIM_SECONDS, 0};
    struct engine_status status;
    char trimmed[32];
    int sig;

    for (;;) {
        snprintf(trimmed, sizeof(trimmed), "%llu",
                 (unsigned long long)(trim_library_pages() >> 10));
        KLOG_INFO(5, "Dropped idle library pages", "kib", trimmed, NULL);
        do {
            sig = sigtimedwait(signals, NULL, &period);
            if (sig > 0)
                return sig;
            engine_status(engine, &status);
        } while (engine_is_running(status.state));
    }
}

int main(int argc, char **argv)
{
    struct options o = {
        .listen = "0.0.0.0:8080",
        .cgroup_root = "/sys/fs/cgroup",
        .log_capacity = 1000,
        .threads = 4,
        .huge_pages = true,
        .pod = getenv("POD_NAME"),
        .node = getenv("NODE_NAME"),
        .pod_ip = getenv("POD_IP"),
    };
    struct cluster cluster;
    char test_namespace[256];
    struct engine_options engine_options;
    struct engine engine;
    struct api api = {0};
    sigset_t signals;
    int ret, fd, sig = 0;

    ret = parse_options(argc, argv, &o);
    if (ret >= 0)
        return ret;

    /*
     * One malloc arena for all threads: each extra arena touches its own
     * heap pages, which adds a few hundred KiB to the idle RSS for no gain
     * at this request rate.
     */
    mallopt(M_ARENA_MAX, 1);

    /* Blocked before any thread starts, so only sigwait() receives them. */
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);
    signal(SIGPIPE, SIG_IGN);

    engine_options = (struct engine_options){
        .cgroup_root = o.cgroup_root,
        .proc_cgroup = "/proc/self/cgroup",
        .meminfo = "/proc/meminfo",
        .log_capacity = o.log_capacity,
        .huge_pages = o.huge_pages,
    };
    ret = engine_init(&engine, &engine_options);
    if (ret < 0) {
        KLOG_ERROR("Failed to start the engine", strerror(-ret), "meminfo",
                   engine_options.meminfo, NULL);
        return 1;
    }

    if (access(o.cgroup_root, F_OK) != 0)
        KLOG_ERROR("Cgroup root not found; limits fall back to host memory",
                   strerror(errno), "cgroupRoot", o.cgroup_root, NULL);

    fd = open_listener(o.listen);
    if (fd < 0) {
        engine_release(&engine);
        return 1;
    }
    if (api_start(&api, &engine, fd, o.threads) < 0) {
        KLOG_ERROR("Failed to start the HTTP server", NULL, "listen", o.listen,
                   NULL);
        close(fd);
        engine_release(&engine);
        return 1;
    }

    if (o.test) {
        struct cluster_options co = {
            .namespace = test_namespace,
            .test = strchr(o.test, '/') + 1,
            .pod = o.pod,
            .node = o.node,
            .pod_ip = o.pod_ip,
            .kubeconfig = o.kubeconfig,
        };

        snprintf(test_namespace, sizeof(test_namespace), "%.*s",
                 (int)(strchr(o.test, '/') - o.test), o.test);
        if (cluster_start(&cluster, &engine, &co) < 0) {
            api_stop(&api);
            close(fd);
            engine_release(&engine);
            return 1;
        }
    }

    sig = wait_for_signal(&signals, &engine);
    KLOG_INFO(0, "Received signal, shutting down", "signal", strsignal(sig),
              NULL);
    if (o.test)
        cluster_stop(&cluster);
    api_stop(&api);
    close(fd);
    engine_release(&engine);
    KLOG_INFO(2, "Stopped", NULL);
    return 0;
}
