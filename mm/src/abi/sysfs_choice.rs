//! The one way a sysfs choice file's modes are declared.

/// Declares the modes of a sysfs choice file (`enabled`, `defrag`,
/// `shmem_enabled`, ...): the enum, with its variants in the order Linux
/// prints the words, and `WORDS`, `word()` and `from_word()` built from
/// that one list, so a word and its mode cannot drift apart.  The
/// variants' discriminants are their display positions; a packed policy
/// word that needs other codes keeps its own mapping.
macro_rules! sysfs_choice {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $word:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Words in the order Linux prints them.
            pub const WORDS: &'static [&'static str] = &[$($word),+];
            const ALL: &'static [$name] = &[$($name::$variant),+];

            /// This mode's sysfs word.
            pub const fn word(self) -> &'static str {
                Self::WORDS[self as usize]
            }

            /// Parse an exact word (the sysfs layer strips one newline).
            pub fn from_word(w: &str) -> Option<Self> {
                Self::WORDS
                    .iter()
                    .position(|&x| x == w)
                    .map(|i| Self::ALL[i])
            }
        }
    };
}
pub(crate) use sysfs_choice;
