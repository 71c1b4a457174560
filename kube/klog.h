/*
 * Structured logging in the shape Kubernetes components use (klog).
 *
 * Each event is one line: a constant, capitalised message in the past tense,
 * then key=value pairs in lowerCamelCase.  Text is the default; JSON is for
 * log collectors.  The caller passes the pairs as a NULL-terminated list of
 * alternating key and already formatted value strings, so this module needs
 * no format parsing and stays safe for any value content.
 */
#ifndef KUBE_KLOG_H
#define KUBE_KLOG_H

#include <stdbool.h>

enum klog_format {
    KLOG_TEXT,
    KLOG_JSON,
};

/* Selects the output format; safe to call before any thread is started. */
void klog_set_format(enum klog_format format);

/* Parses "text" or "json"; returns 0, or -EINVAL for anything else. */
int klog_parse_format(const char *name, enum klog_format *format);

/* Sets the verbosity that klog_info() lines must not exceed (default 2). */
void klog_set_verbosity(int level);

/* Returns true when a line at this verbosity would be written. */
bool klog_enabled(int level);

/*
 * Writes one info line to stderr when level <= the verbosity.  The variadic
 * part is key, value, key, value, ..., NULL; a NULL value prints as "<nil>".
 */
void klog_info(int level, const char *file, int line, const char *message, ...);

/* Writes one error line; err may be NULL. Same pairs as klog_info(). */
void klog_error(const char *file, int line, const char *message,
                const char *err, ...);

#define KLOG_INFO(level, ...) klog_info(level, __FILE__, __LINE__, __VA_ARGS__)
#define KLOG_ERROR(...)       klog_error(__FILE__, __LINE__, __VA_ARGS__)

#endif
