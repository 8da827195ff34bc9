-- The social domain: users, who follows whom, posts, dialogs and the outbox
-- that carries dialog events to the counter service.
-- Length limits mirror the constants in internal/social (MaxNameLen and so on);
-- constraint names are read by errors.go to name the offending field.

CREATE TABLE users (
    id            uuid        PRIMARY KEY,
    first_name    text        NOT NULL
        CONSTRAINT users_first_name_length CHECK (char_length(first_name) BETWEEN 1 AND 100),
    second_name   text        NOT NULL
        CONSTRAINT users_second_name_length CHECK (char_length(second_name) BETWEEN 1 AND 100),
    birthdate     date        NOT NULL
        CONSTRAINT users_birthdate_range CHECK (birthdate >= DATE '1900-01-01' AND birthdate < DATE '2100-01-01'),
    biography     text        NOT NULL DEFAULT ''
        CONSTRAINT users_biography_length CHECK (char_length(biography) <= 4000),
    city          text        NOT NULL DEFAULT ''
        CONSTRAINT users_city_length CHECK (char_length(city) <= 100),
    password_hash bytea       NOT NULL
        CONSTRAINT users_password_hash_present CHECK (octet_length(password_hash) > 0),
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- /user/search by prefixes of both names, ordered by id (docs/SEARCH_INDEX.md):
-- buckets of the first two letters of each name, each bucket in id order, with
-- the names included so that the full prefixes are checked without the table.
CREATE INDEX users_name_prefix_idx ON users
    ((left(first_name, 2) COLLATE "C"), (left(second_name, 2) COLLATE "C"), id)
    INCLUDE (first_name, second_name);

-- A friendship is one-directional: user_id follows friend_id.
CREATE TABLE friends (
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    friend_id  uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, friend_id),
    CONSTRAINT friends_not_self CHECK (user_id <> friend_id)
);
-- Followers of a user (fan-out) and the cascade when a user is deleted.
CREATE INDEX friends_friend_id_idx ON friends (friend_id);

CREATE TABLE posts (
    id             uuid        PRIMARY KEY,
    author_user_id uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    text           text        NOT NULL
        CONSTRAINT posts_text_length CHECK (char_length(text) BETWEEN 1 AND 10000),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
-- The newest posts of one author, in the order a feed reads them.
CREATE INDEX posts_author_created_idx ON posts (author_user_id, created_at DESC, id DESC);

-- A dialog is the unordered pair of its two users: (user_lo, user_hi).
CREATE TABLE messages (
    id           uuid        PRIMARY KEY,
    from_user_id uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    to_user_id   uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    user_lo      uuid        NOT NULL GENERATED ALWAYS AS (least(from_user_id, to_user_id)) STORED,
    user_hi      uuid        NOT NULL GENERATED ALWAYS AS (greatest(from_user_id, to_user_id)) STORED,
    text         text        NOT NULL
        CONSTRAINT messages_text_length CHECK (char_length(text) BETWEEN 1 AND 10000),
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- Set when the recipient has read the message; unread ones feed the counters.
    read_at      timestamptz,
    CONSTRAINT messages_not_self CHECK (from_user_id <> to_user_id)
);
-- The newest messages of a dialog.
CREATE INDEX messages_dialog_idx ON messages (user_lo, user_hi, created_at DESC, id DESC);
-- Unread messages of a recipient, by sender: marking a dialog read.
CREATE INDEX messages_unread_idx ON messages (to_user_id, from_user_id) WHERE read_at IS NULL;

-- Transactional outbox: an event is written in the same transaction as the
-- change it describes, and a relay delivers it at least once, in id order per
-- aggregate.
CREATE TABLE outbox (
    id         bigserial   PRIMARY KEY,
    aggregate  text        NOT NULL,
    kind       text        NOT NULL,
    payload    jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
