/*
 * Chunked arena and iterative binary search tree.  Insert and search loop
 * instead of recursing, so a degenerate tree (any key order) cannot overflow
 * the stack.  Pages are populated with MADV_POPULATE_WRITE where the kernel
 * has it (Linux 5.14+), which faults a whole range in one call, and then each
 * page is stamped with a write so the payload holds real data.
 */
#include "worker/tree.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/* Virtual size of one chunk; only the pages that nodes use become resident. */
#define CHUNK_BYTES     ((size_t)1 << 30)
#define HUGE_PAGE_BYTES ((size_t)2 << 20)
#define PAGE_BYTES      ((size_t)4096)

struct tree_chunk {
    struct tree_chunk *next;
    unsigned char *base;
    size_t size;
    size_t used;
    /* Bytes from base that are already populated. */
    size_t populated;
};

static bool populate_write_works = true;

void tree_init(struct tree *tree, uint64_t seed)
{
    memset(tree, 0, sizeof(*tree));
    tree->seed = seed;
    tree->use_huge_pages = true;
    tree->huge_pages_allowed = true;
}

void tree_allow_huge_pages(struct tree *tree, bool allow)
{
    tree->huge_pages_allowed = allow;
    tree->use_huge_pages = allow;
}

void tree_release(struct tree *tree)
{
    struct tree_chunk *chunk = tree->chunks;

    while (chunk) {
        struct tree_chunk *next = chunk->next;

        munmap(chunk->base, chunk->size);
        free(chunk);
        chunk = next;
    }
    tree->chunks = NULL;
    tree->root = NULL;
    tree->nodes = 0;
    tree->payload_bytes = 0;
    tree->use_huge_pages = tree->huge_pages_allowed;
}

/* A bijective 64-bit mix (the splitmix64 finalizer). */
static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

uint64_t tree_key(const struct tree *tree, uint64_t index)
{
    return mix64(index + tree->seed);
}

static struct tree_chunk *map_chunk(size_t min_bytes, bool huge)
{
    struct tree_chunk *chunk;
    size_t size = CHUNK_BYTES;
    unsigned char *base;

    if (min_bytes > size)
        size = (min_bytes + HUGE_PAGE_BYTES - 1) & ~(HUGE_PAGE_BYTES - 1);
    chunk = calloc(1, sizeof(*chunk));
    if (!chunk)
        return NULL;

    /* Reserve address space only; MAP_NORESERVE charges nothing yet. */
    base = mmap(NULL, size + HUGE_PAGE_BYTES, PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) {
        free(chunk);
        return NULL;
    }

    /* Align the start to a huge page so the kernel can back it with them. */
    size_t lead =
        (HUGE_PAGE_BYTES - ((uintptr_t)base & (HUGE_PAGE_BYTES - 1))) &
        (HUGE_PAGE_BYTES - 1);
    if (lead)
        munmap(base, lead);
    munmap(base + lead + size, HUGE_PAGE_BYTES - lead);
    chunk->base = base + lead;
    chunk->size = size;
    madvise(chunk->base, size, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    return chunk;
}

/* Makes [chunk->populated, end) resident; returns 0 or -ENOMEM. */
static int populate(struct tree_chunk *chunk, size_t end)
{
    size_t start = chunk->populated & ~(PAGE_BYTES - 1);

    end = (end + PAGE_BYTES - 1) & ~(PAGE_BYTES - 1);
    if (end <= start)
        return 0;
    if (populate_write_works &&
        madvise(chunk->base + start, end - start, MADV_POPULATE_WRITE) != 0) {
        if (errno != EINVAL)
            return -ENOMEM;
        /* Older kernel: writing each page below faults it in instead. */
        populate_write_works = false;
    }
    chunk->populated = end;
    return 0;
}

static void *arena_alloc(struct tree *tree, size_t bytes)
{
    struct tree_chunk *chunk = tree->chunks;
    void *p;

    bytes = (bytes + 15) & ~(size_t)15;
    if (!chunk || chunk->size - chunk->used < bytes) {
        chunk = map_chunk(bytes, tree->use_huge_pages);
        if (!chunk)
            return NULL;
        chunk->next = tree->chunks;
        tree->chunks = chunk;
    }
    if (populate(chunk, chunk->used + bytes) != 0)
        return NULL;
    p = chunk->base + chunk->used;
    chunk->used += bytes;
    return p;
}

/* Writes a word derived from the key into every page of the payload. */
static void stamp_payload(struct tree_node *node)
{
    unsigned char *payload = tree_payload(node);
    uint64_t word = node->key;

    for (size_t off = 0; off < node->payload_len; off += PAGE_BYTES) {
        size_t n = node->payload_len - off;

        if (n > sizeof(word))
            n = sizeof(word);
        word = mix64(word);
        memcpy(payload + off, &word, n);
    }
    /* The last page of a payload that ends mid-page is written too. */
    payload[node->payload_len - 1] = (unsigned char)word;
}

int tree_grow(struct tree *tree, size_t payload_len)
{
    struct tree_node *node, **link;

    if (payload_len == 0)
        return -EINVAL;
    node = arena_alloc(tree, sizeof(*node) + payload_len);
    if (!node)
        return -ENOMEM;
    node->key = tree_key(tree, tree->nodes);
    node->left = NULL;
    node->right = NULL;
    node->payload_len = payload_len;
    stamp_payload(node);

    link = &tree->root;
    while (*link)
        link = node->key < (*link)->key ? &(*link)->left : &(*link)->right;
    *link = node;
    tree->nodes++;
    tree->payload_bytes += payload_len;
    return 0;
}

struct tree_node *tree_search(const struct tree *tree, uint64_t key)
{
    struct tree_node *node = tree->root;

    while (node && node->key != key)
        node = key < node->key ? node->left : node->right;
    return node;
}

unsigned char *tree_payload(struct tree_node *node)
{
    return (unsigned char *)(node + 1);
}

uint64_t tree_touch_payload(struct tree_node *node)
{
    const unsigned char *payload = tree_payload(node);
    uint64_t sum = 0, word;

    for (size_t off = 0; off + sizeof(word) <= node->payload_len;
         off += PAGE_BYTES) {
        memcpy(&word, payload + off, sizeof(word));
        sum += word;
    }
    return sum + payload[node->payload_len - 1];
}

size_t tree_height(const struct tree *tree)
{
    /* Breadth-first with an explicit queue, so no recursion here either. */
    struct tree_node **queue;
    size_t head = 0, tail = 0, level_end, height = 0;

    if (!tree->root)
        return 0;
    queue = malloc(tree->nodes * sizeof(void *));
    if (!queue)
        return 0;
    queue[tail++] = tree->root;
    while (head < tail) {
        level_end = tail;
        height++;
        while (head < level_end) {
            struct tree_node *node = queue[head++];

            if (node->left)
                queue[tail++] = node->left;
            if (node->right)
                queue[tail++] = node->right;
        }
    }
    free(queue);
    return height;
}

void tree_use_small_pages(struct tree *tree)
{
    struct tree_chunk *chunk = tree->chunks;

    tree->use_huge_pages = false;
    if (!chunk)
        return;

    /* Pages below the next huge page boundary may already be resident. */
    size_t from =
        (chunk->populated + HUGE_PAGE_BYTES - 1) & ~(HUGE_PAGE_BYTES - 1);
    if (from < chunk->size)
        madvise(chunk->base + from, chunk->size - from, MADV_NOHUGEPAGE);
}
