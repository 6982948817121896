/* list: the one intrusive doubly linked list (a circular list around a head node, as
 * libuv's queue and the Linux kernel's list): O(1) push, pop and remove, no allocation. */
#ifndef PERFCGI_LIST_H
#define PERFCGI_LIST_H

#include <stddef.h>

struct list_node {
    struct list_node *prev, *next;
};

/* An empty list, or a node that is in none (list_remove leaves a node so). */
static inline void list_init(struct list_node *n)
{
    n->prev = n->next = n;
}

static inline int list_empty(const struct list_node *head)
{
    return head->next == head;
}

static inline void list_insert_after(struct list_node *at, struct list_node *n)
{
    n->prev = at;
    n->next = at->next;
    at->next->prev = n;
    at->next = n;
}

static inline void list_push_back(struct list_node *head, struct list_node *n)
{
    list_insert_after(head->prev, n);
}

static inline void list_push_front(struct list_node *head, struct list_node *n)
{
    list_insert_after(head, n);
}

/* Unlinks n from its list; harmless on a node in none. */
static inline void list_remove(struct list_node *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    list_init(n);
}

/* The first node, or NULL when the list is empty. */
static inline struct list_node *list_first(const struct list_node *head)
{
    return list_empty(head) ? NULL : head->next;
}

/* The structure that holds node as its `member`. */
#define list_entry(node, type, member) ((type *)((char *)(node) - offsetof(type, member)))

#define list_for_each(pos, head) for ((pos) = (head)->next; (pos) != (head); (pos) = (pos)->next)
/* Safe against removing pos inside the loop. */
#define list_for_each_safe(pos, tmp, head) \
    for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head); (pos) = (tmp), (tmp) = (pos)->next)

#endif
