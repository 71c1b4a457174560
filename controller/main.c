/*
 * memstress-controller: watches MemoryStressTest resources and runs their
 * worker pods.
 *
 * Start-up order: the HTTP endpoints first (so probes succeed while a
 * replica waits for the Lease), then leader election when asked for, then
 * the caches and the reconcile workers.  SIGTERM and SIGINT are taken with
 * sigwait() in a dedicated thread; shutdown stops the workers, the watches
 * and the endpoints, and releases the Lease so a standby takes over at once.
 * Losing the Lease ends the process with exit code 1, as a replica that may
 * no longer act must not go on reconciling.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "controller/controller.h"
#include "controller/leader.h"
#include "controller/server.h"
#include "kube/klog.h"

struct options {
    const char *kubeconfig;
    const char *namespace;
    const char *worker_image;
    const char *worker_command;
    const char *listen;
    bool leader_elect;
    const char *lease_namespace;
    const char *lease_name;
    int lease_duration;
    int renew_deadline;
    int retry_period;
    int concurrency;
};

static atomic_bool stopping;

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: memstress-controller [OPTIONS]\n"
            "\n"
            "Runs the worker pods of MemoryStressTest resources and reports\n"
            "their progress in each test's status.\n"
            "\n"
            "Options:\n"
            "  --kubeconfig PATH          API credentials (default "
            "$KUBECONFIG,\n"
            "                             ~/.kube/config, then in-cluster)\n"
            "  --namespace NS             watch only NS (default: all)\n"
            "  --worker-image IMAGE       worker image (default "
            "$MEMSTRESS_IMAGE,\n"
            "                             else memstress:" MEMSTRESS_VERSION
            ")\n"
            "  --worker-command PATH      worker executable in the image\n"
            "                             (default memstress-worker)\n"
            "  --listen ADDR:PORT         /healthz, /readyz, /metrics "
            "(default\n"
            "                             0.0.0.0:8081)\n"
            "  --concurrency N            reconcile workers, 1-16 (default "
            "2)\n"
            "  --leader-elect             run only while holding a Lease\n"
            "  --leader-election-namespace NS  (default $POD_NAMESPACE, else\n"
            "                             memstress-system)\n"
            "  --leader-election-id NAME  Lease name (default "
            "memstress-controller)\n"
            "  --lease-duration SECONDS   (default 15)\n"
            "  --renew-deadline SECONDS   (default 10)\n"
            "  --retry-period SECONDS     (default 2)\n"
            "  --log-format text|json     (default text)\n"
            "  -v, --v LEVEL              log verbosity 0-5 (default 2)\n"
            "  --help                     print this help and exit\n"
            "  --version                  print the version and exit\n");
}

static int parse_int(const char *name, const char *text, int min, int max,
                     int *out)
{
    char *end;
    long value = strtol(text, &end, 10);

    if (*text == '\0' || *end != '\0' || value < min || value > max) {
        fprintf(stderr, "memstress-controller: invalid %s \"%s\": use %d-%d\n",
                name, text, min, max);
        return -EINVAL;
    }
    *out = (int)value;
    return 0;
}

static int parse_options(int argc, char **argv, struct options *o)
{
    static const struct option long_options[] = {
        {"kubeconfig", required_argument, NULL, 'k'},
        {"namespace", required_argument, NULL, 'n'},
        {"worker-image", required_argument, NULL, 'i'},
        {"worker-command", required_argument, NULL, 'c'},
        {"listen", required_argument, NULL, 'l'},
        {"concurrency", required_argument, NULL, 'C'},
        {"leader-elect", no_argument, NULL, 'L'},
        {"leader-election-namespace", required_argument, NULL, 'N'},
        {"leader-election-id", required_argument, NULL, 'I'},
        {"lease-duration", required_argument, NULL, 'D'},
        {"renew-deadline", required_argument, NULL, 'R'},
        {"retry-period", required_argument, NULL, 'P'},
        {"log-format", required_argument, NULL, 'f'},
        {"v", required_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    enum klog_format format;
    int opt, level, ret = 0;

    while (ret == 0 &&
           (opt = getopt_long(argc, argv, "v:", long_options, NULL)) != -1) {
        switch (opt) {
        case 'k':
            o->kubeconfig = optarg;
            break;
        case 'n':
            o->namespace = optarg;
            break;
        case 'i':
            o->worker_image = optarg;
            break;
        case 'c':
            o->worker_command = optarg;
            break;
        case 'l':
            o->listen = optarg;
            break;
        case 'L':
            o->leader_elect = true;
            break;
        case 'N':
            o->lease_namespace = optarg;
            break;
        case 'I':
            o->lease_name = optarg;
            break;
        case 'C':
            ret = parse_int("--concurrency", optarg, 1, 16, &o->concurrency);
            break;
        case 'D':
            ret = parse_int("--lease-duration", optarg, 2, 600,
                            &o->lease_duration);
            break;
        case 'R':
            ret = parse_int("--renew-deadline", optarg, 1, 600,
                            &o->renew_deadline);
            break;
        case 'P':
            ret = parse_int("--retry-period", optarg, 1, 60, &o->retry_period);
            break;
        case 'f':
            if (klog_parse_format(optarg, &format) < 0) {
                fprintf(stderr,
                        "memstress-controller: invalid --log-format "
                        "\"%s\": use text or json\n",
                        optarg);
                return 2;
            }
            klog_set_format(format);
            break;
        case 'v':
            ret = parse_int("-v", optarg, 0, 10, &level);
            if (ret == 0)
                klog_set_verbosity(level);
            break;
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
    if (ret < 0)
        return 2;
    if (optind < argc) {
        fprintf(stderr, "memstress-controller: unexpected argument \"%s\"\n",
                argv[optind]);
        return 2;
    }
    if (o->renew_deadline >= o->lease_duration) {
        fprintf(stderr,
                "memstress-controller: --renew-deadline (%d) must be "
                "shorter than --lease-duration (%d)\n",
                o->renew_deadline, o->lease_duration);
        return 2;
    }
    return -1;
}

static void *wait_for_signal(void *arg)
{
    sigset_t *signals = arg;
    int sig = 0;

    while (sigwait(signals, &sig) != 0)
        ;
    KLOG_INFO(0, "Received signal, shutting down", "signal", strsignal(sig),
              NULL);
    atomic_store(&stopping, true);
    return NULL;
}

static int connect_client(const struct options *o, struct kube_client **out)
{
    struct kubeconfig cfg;
    char err[KUBECONFIG_ERROR_SIZE];
    int ret =
        kubeconfig_load_default(&cfg, o->kubeconfig, NULL, err, sizeof(err));

    if (ret < 0) {
        KLOG_ERROR("Failed to load Kubernetes configuration", err, NULL);
        return ret;
    }
    KLOG_INFO(1, "Loaded Kubernetes configuration", "source", cfg.source,
              "server", cfg.server, NULL);
    ret = kube_client_new(&cfg, NULL, out, err, sizeof(err));
    if (ret < 0) {
        kubeconfig_release(&cfg);
        KLOG_ERROR("Failed to create Kubernetes client", err, NULL);
    }
    return ret;
}

static void identity_for(char *buf, size_t size)
{
    char host[200] = "memstress";
    const char *pod = getenv("POD_NAME");

    if (pod && *pod)
        snprintf(host, sizeof(host), "%s", pod);
    else
        gethostname(host, sizeof(host) - 1);
    snprintf(buf, size, "%s_%d", host, (int)getpid());
}

/* Runs the controller until a signal, or the Lease is lost; exit code. */
static int run(const struct options *o, struct kube_client *client,
               const char *identity)
{
    struct controller controller;
    struct leader leader, *election = NULL;
    struct server server;
    struct timespec tick = {0, 100 * 1000000L};
    struct controller_options co = {
        .namespace = o->namespace,
        .identity = identity,
        .pods = {.image = o->worker_image, .command = o->worker_command},
        .concurrency = o->concurrency,
        .qps = 10,
        .burst = 100,
    };
    int ret = 0;

    if (controller_init(&controller, client, &co) < 0)
        return 1;
    if (o->leader_elect) {
        if (leader_init(&leader, client, o->lease_namespace, o->lease_name,
                        identity, o->lease_duration, o->renew_deadline,
                        o->retry_period) < 0)
            return 1;
        election = &leader;
    }
    if (server_start(&server, o->listen, &controller, election) < 0) {
        controller_release(&controller);
        return 1;
    }
    if (election && leader_acquire(election, &stopping) < 0)
        goto out_stop_server;

    controller_start(&controller);
    KLOG_INFO(0, "Started controller", "identity", identity, "namespace",
              o->namespace ? o->namespace : "(all)", NULL);
    if (election) {
        if (leader_hold(election, &stopping) < 0)
            ret = 1;
    } else {
        while (!atomic_load(&stopping))
            nanosleep(&tick, NULL);
    }
    controller_stop(&controller);

out_stop_server:
    server_stop(&server);
    controller_release(&controller);
    if (election)
        leader_release(election);
    return ret;
}

int main(int argc, char **argv)
{
    static char image[300], identity[300];
    const char *pod_namespace = getenv("POD_NAMESPACE");
    struct options o = {
        .worker_command = "memstress-worker",
        .listen = "0.0.0.0:8081",
        .lease_namespace = pod_namespace && *pod_namespace ? pod_namespace
                                                           : "memstress-system",
        .lease_name = "memstress-controller",
        .lease_duration = 15,
        .renew_deadline = 10,
        .retry_period = 2,
        .concurrency = 2,
    };
    struct kube_client *client = NULL;
    sigset_t signals;
    pthread_t signal_thread;
    int ret;

    const char *image_env = getenv("MEMSTRESS_IMAGE");

    snprintf(image, sizeof(image), "%s",
             image_env && *image_env ? image_env
                                     : "memstress:" MEMSTRESS_VERSION);
    o.worker_image = image;
    ret = parse_options(argc, argv, &o);
    if (ret >= 0)
        return ret;

    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);
    signal(SIGPIPE, SIG_IGN);
    pthread_create(&signal_thread, NULL, wait_for_signal, &signals);
    pthread_detach(signal_thread);

    if (connect_client(&o, &client) < 0)
        return 1;
    identity_for(identity, sizeof(identity));
    ret = run(&o, client, identity);
    kube_client_free(client);
    KLOG_INFO(0, "Stopped controller", NULL);
    return ret;
}
