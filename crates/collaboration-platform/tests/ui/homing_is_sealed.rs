// Nobody outside the crate can invent a third homing.
use collaboration_platform::Homing;

#[derive(Debug)]
enum Anywhere {}

impl Homing for Anywhere {
    const NAME: &'static str = "anywhere";
}

fn main() {}
