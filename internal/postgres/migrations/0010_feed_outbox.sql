-- Timelines in Redis (docs/FEED.md): the events that keep them up to date
-- and the authors whose posts are merged at read instead of fanned out.

-- The feed's transactional outbox: a post or friendship change writes its
-- event here in the same transaction. The feed worker applies events to
-- Redis at least once and then deletes them; applying is idempotent and
-- reads the current state from the tables, so duplicates and reordering do
-- not corrupt a timeline. Kept apart from outbox, whose relay serves the
-- counter service.
CREATE TABLE feed_outbox (
    id         bigserial   PRIMARY KEY,
    kind       text        NOT NULL
        CONSTRAINT feed_outbox_kind CHECK (kind IN ('post_created', 'post_updated', 'post_deleted',
                                                    'friend_set', 'friend_deleted')),
    -- post_*: the post's author; friend_*: the followed user.
    author_id  uuid        NOT NULL,
    -- post_*: the post.
    post_id    uuid,
    -- friend_*: the follower.
    user_id    uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT feed_outbox_shape CHECK ((kind LIKE 'post_%' AND post_id IS NOT NULL)
                                     OR (kind LIKE 'friend_%' AND user_id IS NOT NULL))
);

-- Authors with more followers than the feed's threshold: their posts are
-- not copied into followers' timelines but merged at read from a short list
-- of their own. An author stays here once promoted, so that readers and the
-- worker always agree on who is merged at read.
CREATE TABLE feed_celebrities (
    author_id   uuid        PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    promoted_at timestamptz NOT NULL DEFAULT now()
);
